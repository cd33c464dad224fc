//! Exit codes and [`Fatal`], the one error type every subcommand hands back to `main.rs`.
//! The codes are sysexits.h's (plus 1 for "the agent answered ERR"); `main.rs` prints
//! `error: MSG` and exits with the code. Imports nothing: any layer may use it.

/// `eprintln!` that cannot panic: when stderr's reader has gone (`tether scan --watch 2>&1 |
/// head -1`, a journal stream that broke), the line is lost, not the process (std's
/// `eprintln!` panics on EPIPE, and a panic aborts the shipped build: exit 134).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A failure that ends the process: its exit code and a one-line message.
#[derive(Debug)]
pub struct Fatal {
    pub code: u8,
    pub msg: String,
}

impl Fatal {
    pub fn new(code: u8, msg: impl Into<String>) -> Fatal {
        Fatal {
            code,
            msg: msg.into(),
        }
    }

    /// A bad command line (64).
    pub fn usage(msg: impl Into<String>) -> Fatal {
        Fatal::new(EX_USAGE, msg)
    }
}

/// Characters a terminal must not get from a peer: the control characters (C0, DEL, C1),
/// the bidirectional formatting characters (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069),
/// which reorder what follows them on the line, so `\u{202e}` can make one board's name
/// show as another's or turn a row's columns around ("Trojan Source", CVE-2021-42574), and
/// the invisible ones: the soft hyphen, U+180E, the zero-width U+200B-U+200D, the line and
/// paragraph separators U+2028/9, U+2060-U+206F, the BOM U+FEFF, U+FFF9-U+FFFB and the tags
/// U+E0000-U+E007F, which show as nothing, so `pi-kitchen\u{200b}` looks like `pi-kitchen`
/// (and a column counted with them comes out short).
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `s` for a terminal: each character [`hidden`] (control, bidirectional formatting,
/// invisible) shown as `?`, so a line stays one line and text from elsewhere (a board's
/// name, an argument) cannot reach the terminal as a control sequence, reorder what it
/// shows or hide in it.
pub fn printable(s: &str) -> String {
    marked(s, hidden)
}

/// [`printable`], white space shown as `?` too: one word, a cell of a table that cannot pass
/// for the columns after it.
pub fn one_word(s: &str) -> String {
    marked(s, |c| hidden(c) || c.is_whitespace())
}

fn marked(s: &str, hide: fn(char) -> bool) -> String {
    s.chars().map(|c| if hide(c) { '?' } else { c }).collect()
}

/// `s` with each character [`hidden`] (control characters C0, DEL and C1, bidirectional
/// formatting and invisible ones) shown escaped as Rust writes it (`\n`, `\r`,
/// `\u{1b}`, `\u{9b}`, `\u{202e}`), the rest as it is: what `tether ctl` prints of a peer's
/// text, so a line stays one line and the peer cannot reach the terminal (or a log) with a
/// control sequence or reorder the line, while what it did send can still be read.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `tether ctl`: the agent answered `ERR ...`.
pub const EX_ERR: u8 = 1;
/// A bad option or argument.
pub const EX_USAGE: u8 = 64;
/// The agent (or an interface, or a socket) is not there.
pub const EX_UNAVAILABLE: u8 = 69;
/// The operating system refused something tether cannot do without (signals, getrandom).
pub const EX_OSERR: u8 = 71;
/// An output file cannot be written (`scan --prometheus-sd`).
pub const EX_CANTCREAT: u8 = 73;
/// Standard output cannot be written (a full disk; `>/dev/full`).
pub const EX_IOERR: u8 = 74;
/// No reply in time.
pub const EX_TEMPFAIL: u8 = 75;
/// The peer answered something that is not tether's protocol.
pub const EX_PROTOCOL: u8 = 76;
/// Permission denied (the socket's mode, `ERR denied`).
pub const EX_NOPERM: u8 = 77;
/// A named file is missing or wrong (token, fleet key, LED, group).
pub const EX_CONFIG: u8 = 78;

/// What a write to standard output came to: `Ok(true)` written; `Ok(false)` when its
/// reader has gone (`| head`: nobody reads the rest, which is not a failure); any other
/// error (a full disk) is one, [`EX_IOERR`]: the user would otherwise take an empty or
/// cut file for the whole answer.
pub fn stdout_written(r: std::io::Result<()>) -> Result<bool, Fatal> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Fatal::new(EX_IOERR, format!("writing to stdout: {e}"))),
    }
}

/// Writes `text` to standard output and flushes it: see [`stdout_written`].
pub fn to_stdout(text: &str) -> Result<bool, Fatal> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    stdout_written(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_text_cannot_steer_the_terminal() {
        // ESC, CSI (C1), DEL, a line end, and a right-to-left override.
        let s = "a\u{1b}[2Jb\u{9b}c\u{7f}\nd\u{202e}fed\u{2066}é";
        assert_eq!(printable(s), "a?[2Jb?c??d?fed?é");
        assert_eq!(
            escaped(s),
            "a\\u{1b}[2Jb\\u{9b}c\\u{7f}\\nd\\u{202e}fed\\u{2066}é"
        );
        // Invisible ones too: zero-width, separators, a BOM, a soft hyphen, a tag.
        let s = "pi\u{200b}-k\u{2028}i\u{2060}t\u{feff}c\u{ad}h\u{e0041}";
        assert_eq!(printable(s), "pi?-k?i?t?c?h?");
        assert_eq!(
            escaped(s),
            "pi\\u{200b}-k\\u{2028}i\\u{2060}t\\u{feff}c\\u{ad}h\\u{e0041}"
        );
        // Other marks and letters of any script pass unchanged.
        let ok = "kitchen-π 東京 ‐ ‘x’";
        assert_eq!(printable(ok), ok);
        assert_eq!(escaped(ok), ok);
    }
}
