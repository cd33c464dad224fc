//! What `tether scan` prints and writes, from the rows of [`super::Boards`]: the table,
//! `--json`, and the Prometheus `file_sd` text. Pure: the caller writes the text out.

use super::boards::{sorted, Board};
use crate::exit::one_word;
use crate::proto::fixed::Fixed;
use crate::proto::json;
use std::time::{Duration, Instant};

/// `addr:port` for a URL or a connect string: IPv6 in brackets.
fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

pub(super) fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn status(b: &Board, now: Instant, silent_after: Duration) -> &'static str {
    if b.bye {
        "bye"
    } else if now.saturating_duration_since(b.heard) > silent_after {
        "silent"
    } else {
        "up"
    }
}

/// The table; with a key a TRUST column is added at the end. Text a board sent (id, host,
/// address) is shown as [`one_word`]: each control, bidirectional
/// formatting or invisible character and each white space as `?` (a host
/// `pi-kitchen 10.0.0.5 4545 ... up signed` would pass for a row's columns).
pub fn table(rows: &[&Board], now: Instant, silent_after: Duration, trust: bool) -> String {
    // ID, HOST and ADDRESS as wide as their longest (an agent's id has 16 characters, a
    // host name may have 64, a scoped IPv6 address ~30; a datagram's may be longer), so
    // rows stay in line.
    let width = |f: fn(&Board) -> &str, least| {
        rows.iter()
            .map(|b| f(b).chars().count())
            .fold(least, usize::max)
    };
    let (iw, hw, aw) = (
        width(|b| &b.id, 16),
        width(|b| &b.host, 20),
        width(|b| &b.addr, 15),
    );
    // Each line without the padding of its last column.
    let mut s = String::new();
    let mut line = |l: String| {
        s += l.trim_end();
        s.push('\n');
    };
    line(format!(
        "{:<iw$} {:<hw$} {:<aw$} {:>5} {:>7} {:>5} {:>6} {:>5} {:>6} {:<6}{}",
        "ID",
        "HOST",
        "ADDRESS",
        "PORT",
        "UPTIME",
        "LOAD",
        "TEMP",
        "FACTS",
        "SEEN",
        "STATE",
        if trust { " TRUST" } else { "" }
    ));
    let shown = |v: Option<f64>, decimals| v.map_or("-".into(), |v| Fixed(v, decimals).to_string());
    for b in rows {
        let seen = now.saturating_duration_since(b.heard).as_secs_f64();
        line(format!(
            "{:<iw$} {:<hw$} {:<aw$} {:>5} {:>7} {:>5} {:>6} {:>5} {:>5}s {:<6}{}",
            one_word(&b.id),
            one_word(&b.host),
            one_word(&b.addr),
            b.port,
            human_secs(b.uptime),
            shown(b.load, 2),
            shown(b.temp_c, 1),
            b.facts,
            Fixed(seen, 1),
            status(b, now, silent_after),
            if trust {
                format!(" {}", b.trust.as_str())
            } else {
                String::new()
            }
        ));
    }
    s
}

/// The rows as a JSON array, one object per board. Written straight into the String, which
/// grows: every row is whole however long its strings are once escaped.
pub fn to_json(rows: &[&Board], now: Instant, silent_after: Duration) -> String {
    let mut w = String::from("[");
    for (i, b) in rows.iter().enumerate() {
        if i > 0 {
            w.push(',');
        }
        // Writing to a String cannot fail.
        let _ = (|| -> std::fmt::Result {
            use std::fmt::Write as _;
            w.write_str("{\"id\":")?;
            json::write_str(&mut w, b.id.as_bytes())?;
            w.write_str(",\"host\":")?;
            json::write_str(&mut w, b.host.as_bytes())?;
            w.write_str(",\"addr\":")?;
            json::write_str(&mut w, b.addr.as_bytes())?;
            w.write_str(",\"addrs\":[")?;
            for (i, a) in b.addrs.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                json::write_str(&mut w, a.as_bytes())?;
            }
            w.write_char(']')?;
            match b.metrics {
                Some(m) => write!(w, ",\"metrics\":{m}")?,
                None => w.write_str(",\"metrics\":null")?,
            }
            write!(w, ",\"port\":{},\"uptime\":{},\"load\":", b.port, b.uptime)?;
            match b.load {
                Some(l) => write!(w, "{}", Fixed(l, 2))?,
                None => w.write_str("null")?,
            }
            w.write_str(",\"temp_c\":")?;
            json::write_opt_f1(&mut w, b.temp_c.map(|t| t as f32))?;
            write!(w, ",\"facts\":{},\"seq\":{},\"run\":", b.facts, b.seq)?;
            match &b.run {
                Some(r) => json::write_str(&mut w, r.as_bytes())?,
                None => w.write_str("null")?,
            }
            write!(
                w,
                ",\"seen_s\":{},\"state\":\"{}\",\"trust\":\"{}\",\"dup_id\":{}}}",
                Fixed(now.saturating_duration_since(b.heard).as_secs_f64(), 1),
                status(b, now, silent_after),
                b.trust.as_str(),
                b.dup_id
            )
        })();
    }
    w.push(']');
    w
}

/// `--prometheus-sd`: Prometheus file_sd JSON listing every board of `boards` that is up
/// (not gone silent, no goodbye) and announces a metrics port, sorted by id (then address):
/// `[{"targets":["ADDR:PORT"],"labels":{"tether_id":"..","tether_host":".."}},...]`.
/// The caller picks the boards (all of them; with a fleet key, the signed ones).
pub fn prometheus_sd<'b>(
    boards: impl IntoIterator<Item = &'b Board>,
    now: Instant,
    silent_after: Duration,
) -> String {
    let up = sorted(
        boards
            .into_iter()
            .filter(|b| b.metrics.is_some() && status(b, now, silent_after) == "up")
            .collect(),
        |a, b| a.id.cmp(&b.id).then(a.addr.cmp(&b.addr)),
    );
    let mut w = String::from("[");
    for b in up {
        let Some(port) = b.metrics else { continue };
        if w.len() > 1 {
            w.push(',');
        }
        // Into the String as in `to_json`: it grows, so no board is left out.
        let _ = (|| -> std::fmt::Result {
            use std::fmt::Write as _;
            w.write_str("{\"targets\":[")?;
            json::write_str(&mut w, host_port(&b.addr, port).as_bytes())?;
            w.write_str("],\"labels\":{\"tether_id\":")?;
            json::write_str(&mut w, b.id.as_bytes())?;
            w.write_str(",\"tether_host\":")?;
            json::write_str(&mut w, b.host.as_bytes())?;
            w.write_str("}}")
        })();
    }
    w.push(']');
    w
}
