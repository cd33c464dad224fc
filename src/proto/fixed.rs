//! Fixed-point decimal text of a float: [`Fixed`] writes what `format!("{:.N}", v)` writes
//! (the exact binary value rounded half to even, `-` on every negative including -0, `NaN`,
//! `inf`) without core's float formatting (flt2dec: about 9 KiB of the aarch64 binary once
//! nothing else uses it). Pure: no I/O, no heap, no panic. Width and alignment of the
//! format spec apply (`{:>5}`); its precision does not (the decimals are [`Fixed::1`]).

use core::fmt;

/// `v` with `.1` decimals (at most 9).
#[derive(Clone, Copy)]
pub struct Fixed(pub f64, pub u8);

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 330];
        let s = write(&mut buf, self.0, u32::from(self.1.min(9)));
        f.pad(s)
    }
}

/// Writes the text right-aligned into `buf` and returns it. `buf` holds f64::MAX's 309
/// integer digits, sign, point and 9 decimals.
fn write(buf: &mut [u8; 330], v: f64, decimals: u32) -> &str {
    let bits = v.to_bits();
    let neg = bits >> 63 == 1;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    if exp == 0x7ff {
        return match (frac != 0, neg) {
            (true, _) => "NaN",
            (false, true) => "-inf",
            (false, false) => "inf",
        };
    }
    // v = m * 2^e exactly.
    let (m, e) = match exp {
        0 => (frac, -1074),
        _ => (frac | 1 << 52, exp - 1075),
    };
    let scale = 10u64.pow(decimals);
    // Integer part as `int << shift`, decimals as `q` (0..scale).
    let (int, shift, mut q) = if e >= 0 {
        (m, e.unsigned_abs(), 0)
    } else {
        let k = e.unsigned_abs();
        let (int, rest) = match k {
            0..=63 => (m >> k, m & ((1 << k) - 1)),
            _ => (0, m),
        };
        // rest / 2^k < 1 scaled to `decimals` digits, rounded half to even (on the last
        // digit written); from k = 100 on, rest * scale < 2^83 is below half of 2^k.
        let mut q = 0;
        if k < 100 {
            let scaled = u128::from(rest) * u128::from(scale);
            q = (scaled >> k) as u64;
            let r = scaled & ((1u128 << k) - 1);
            let half = 1u128 << (k - 1);
            let last = if decimals == 0 { int } else { q };
            if r > half || (r == half && last & 1 == 1) {
                q += 1;
            }
        }
        match q == scale {
            true => (int + 1, 0, 0),
            false => (int, 0, q),
        }
    };
    let mut at = buf.len();
    let mut put = |buf: &mut [u8; 330], c: u8| {
        at -= 1;
        if let Some(b) = buf.get_mut(at) {
            *b = c;
        }
    };
    if decimals > 0 {
        for _ in 0..decimals {
            put(buf, b'0' + (q % 10) as u8);
            q /= 10;
        }
        put(buf, b'.');
    }
    // The integer part in 32-bit limbs (m < 2^53 and shift <= 971: 33 limbs), written
    // by repeated division by 10.
    let mut limbs = [0u32; 36];
    let (word, bit) = ((shift / 32) as usize, shift % 32);
    let x = u128::from(int) << bit;
    for (i, l) in limbs.iter_mut().skip(word).take(3).enumerate() {
        *l = (x >> (32 * i)) as u32;
    }
    loop {
        let mut rem = 0u64;
        for l in limbs.iter_mut().rev() {
            let cur = rem << 32 | u64::from(*l);
            *l = (cur / 10) as u32;
            rem = cur % 10;
        }
        put(buf, b'0' + rem as u8);
        if limbs.iter().all(|&l| l == 0) {
            break;
        }
    }
    if neg {
        put(buf, b'-');
    }
    core::str::from_utf8(buf.get(at..).unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares with core's formatting over awkward values and every precision used.
    #[test]
    fn writes_what_core_writes() {
        let mut vals = vec![
            0.0,
            -0.0,
            0.125,
            0.375,
            0.625,
            0.05,
            0.95,
            41.25,
            -0.04,
            1.005,
            9.995,
            99.95,
            0.5,
            1.5,
            2.5,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::from(f32::MAX),
            1e23,
            2f64.powi(53) + 1.0,
            2f64.powi(64),
            2f64.powi(100) + 2f64.powi(48),
            123456.789,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // A deterministic spread of values (an LCG's bits), plus two-decimal loads.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            vals.push(f64::from_bits(x));
            vals.push((x % 100_000) as f64 / 1000.0);
            vals.push(f64::from(f32::from_bits((x >> 32) as u32)));
        }
        for n in 0..50_000u32 {
            vals.push(f64::from(n as f32 / 100.0));
        }
        for v in vals {
            for d in 0..=3u8 {
                let want = format!("{:.*}", usize::from(d), v);
                assert_eq!(Fixed(v, d).to_string(), want, "{v:e} .{d}");
            }
        }
        assert_eq!(format!("{:>6}|", Fixed(3.0, 1)), "   3.0|");
    }
}
