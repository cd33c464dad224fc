//! A decimal number's value, read without core's float parser (dec2flt: its table of powers
//! of five alone is 10 KiB, about 14 KiB of the aarch64 binary in all, for the few numbers
//! tether reads: `-t SECS`, a thermal zone's millidegrees, and a beacon's
//! `load` and `temp_c`). Pure: no I/O, no heap, no panic.
//!
//! The syntax is JSON's number, `-`? digits (`.` digits)? ([eE] [+-]? digits)?, with leading
//! zeros allowed. The first 19 significant digits are read exactly; the value is then that
//! integer times a power of ten in f64, within a few units in the last place of what
//! `str::parse::<f64>` gives: these numbers are shown with at most three decimals.

/// Most significant digits read exactly (10^19 < 2^64).
const DIGITS_MAX: u32 = 19;

/// The value of `s`, or None when `s` is not such a number (empty, `inf`, `NaN`, hex, `+1`,
/// `.5`, `5.`, trailing bytes). Huge exponents give infinity or zero, as they would in f64.
pub fn parse(s: &[u8]) -> Option<f64> {
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (int, rest) = s.split_at(digits(s));
    if int.is_empty() {
        return None;
    }
    let (frac, rest) = match rest.split_first() {
        Some((b'.', after)) => match after.split_at(digits(after)) {
            ([], _) => return None,
            frac_rest => frac_rest,
        },
        _ => (&[][..], rest),
    };
    let exp = match rest.split_first() {
        None => 0,
        Some((b'e' | b'E', after)) => exponent(after)?,
        Some(_) => return None,
    };
    // value = mantissa * 10^scale
    let (mut mantissa, mut significant, mut scale) = (0u64, 0u32, exp);
    for (k, &d) in int.iter().chain(frac).enumerate() {
        let in_frac = k >= int.len();
        if significant < DIGITS_MAX {
            mantissa = mantissa * 10 + u64::from(d - b'0');
            significant += u32::from(mantissa > 0);
            scale = scale.saturating_sub(i32::from(in_frac));
        } else if !in_frac {
            scale = scale.saturating_add(1);
        }
    }
    // 10^-330 is below the smallest f64 and 10^310 above the largest: nothing between
    // loses more by stopping there. Zero stays zero whatever its exponent (0 * inf is NaN).
    let scale = if mantissa == 0 {
        0
    } else {
        scale.clamp(-330, 310)
    };
    let m = mantissa as f64;
    let v = if scale < 0 {
        m / pow10(scale.unsigned_abs())
    } else {
        m * pow10(scale.unsigned_abs())
    };
    Some(if neg { -v } else { v })
}

/// The exponent after `e`: [+-]? digits, saturating (`1e99999999999` is still infinity).
fn exponent(s: &[u8]) -> Option<i32> {
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let e = s.iter().fold(0i32, |e, &d| {
        e.saturating_mul(10).saturating_add(i32::from(d - b'0'))
    });
    Some(if neg { -e } else { e })
}

/// 10^n in f64 (infinity past 10^308), by squaring: at most nine multiplications.
fn pow10(mut n: u32) -> f64 {
    let (mut result, mut base) = (1.0f64, 10.0f64);
    while n > 0 {
        if n & 1 == 1 {
            result *= base;
        }
        base *= base;
        n >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// Within `ulps` units in the last place of std's correctly rounded value.
    fn close(s: &str, ulps: u64) {
        let want: f64 = s.parse().unwrap();
        let got = parse(s.as_bytes()).unwrap_or_else(|| panic!("{s}: None"));
        if want.is_infinite() || want == 0.0 {
            assert_eq!(got, want, "{s}");
            return;
        }
        let d = got.to_bits().abs_diff(want.to_bits());
        assert!(d <= ulps, "{s}: {got} against {want} ({d} ulps)");
    }

    #[test]
    fn the_numbers_tether_reads_are_read_as_std_reads_them() {
        // Timeouts, loads, millidegrees, a beacon's fields: exactly.
        for s in [
            "0",
            "5",
            "5.0",
            "0.001",
            "2.5",
            "86399.999",
            "0.52",
            "12.47",
            "45678",
            "-12",
            "-0.5",
            "100036455.14",
            "1000000",
            "0.1",
            "0.3",
            "21.5",
            "-40.0",
        ] {
            close(s, 0);
        }
        // Exponents, long mantissas, extremes: within a few ulps, infinity and zero alike.
        for s in [
            "1e-12",
            "1E9",
            "1e+3",
            "2.5e-3",
            "123456789012345678901234567890",
            "1e308",
            "1e309",
            "1e999",
            "1e-400",
            "0.000000000000000000000000001",
            "-1e999",
            "3.141592653589793238462643383279",
            "0e5",
            "0E1631088373",
            "-0e999",
            "0.000e-99999",
            "00012.5000",
        ] {
            close(s, 4);
        }
        assert_eq!(parse(b"-0").map(f64::to_bits), Some((-0.0f64).to_bits()));
    }

    /// Random strings over the digits and `.-+eE`: what this reads, std reads too, to the
    /// same value within a few ulps (below 1e-300, where this gives up precision for
    /// subnormals, to within 1e-300).
    #[test]
    fn random_strings_agree_with_std() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"0123456789012345678901234567890123456789.-+eE";
        let (mut read, mut s) = (0, Vec::new());
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.clear();
            for k in 0..(x % 24) {
                let i = ((x >> (k * 2 % 40)) + k) % alphabet.len() as u64;
                s.push(alphabet[i as usize]);
            }
            let Some(got) = parse(&s) else { continue };
            read += 1;
            let text = core::str::from_utf8(&s).unwrap();
            let want: f64 = text
                .parse()
                .unwrap_or_else(|_| panic!("{text}: std refuses"));
            let ok = got == want
                || got.to_bits().abs_diff(want.to_bits()) <= 8
                || (want.abs() < 1e-300 && got.abs() < 1e-300);
            assert!(ok, "{text}: {got} against {want}");
        }
        assert!(read > 10_000, "only {read} numbers made");
    }

    #[test]
    fn what_is_not_a_decimal_number_is_none() {
        for s in [
            "", "-", "+1", ".5", "5.", "5.e3", "1e", "1e+", "1e-", "e5", "1.2.3", "1 ", " 1",
            "inf", "NaN", "0x10", "1_000", "--1", "1e5x", "\u{661}",
        ] {
            assert_eq!(parse(s.as_bytes()), None, "{s:?}");
        }
    }
}
