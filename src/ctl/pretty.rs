//! `tether ctl` on a terminal: the one-line JSON of STATUS, STATS and SOCKETS as indented
//! `key: value` text. A small reader for any JSON (the agent's own, but also whatever a
//! stranger on `-c HOST:PORT` sends): anything it cannot read gives None and the caller
//! prints the reply as it came (escaped). Client side only: allocates freely, depth-limited.

use crate::exit::escaped;

/// How deep arrays and objects may nest before the text is shown raw instead.
const MAX_DEPTH: usize = 16;

#[derive(Debug, PartialEq)]
enum Value {
    /// A number, `true`, `false` or `null`, as written.
    Bare(String),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.s.get(self.i) == Some(&c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'"' => self.string().map(Value::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Value::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Value::Arr(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                if self.eat(b'}') {
                    return Some(Value::Obj(members));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    members.push((k, self.value(depth + 1)?));
                    if self.eat(b'}') {
                        return Some(Value::Obj(members));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            _ => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
                {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                let ok = matches!(word, "true" | "false" | "null") || is_number(word.as_bytes());
                ok.then(|| Value::Bare(word.to_string()))
            }
        }
    }

    /// A string literal at `i`, escapes undone.
    fn string(&mut self) -> Option<String> {
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let mut end = start;
        loop {
            match *self.s.get(end)? {
                b'"' => break,
                b'\\' => end += 2,
                _ => end += 1,
            }
        }
        self.i = end + 1;
        crate::proto::json::unescape(&self.s[start..end])
    }
}

/// Is `w` a number as JSON writes one (RFC 8259):
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`? (Not `NaN`, `inf`, `01`, `+1`, `1.`.)
fn is_number(w: &[u8]) -> bool {
    let digits = |w: &[u8]| w.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = usize::from(w.first() == Some(&b'-'));
    match digits(&w[i..]) {
        0 => return false,
        n if n > 1 && w[i] == b'0' => return false,
        n => i += n,
    }
    if w.get(i) == Some(&b'.') {
        match digits(&w[i + 1..]) {
            0 => return false,
            n => i += 1 + n,
        }
    }
    if matches!(w.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(w.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match digits(&w[i..]) {
            0 => return false,
            n => i += n,
        }
    }
    i == w.len()
}

/// A value on one line: strings bare (`""` when empty, [`escaped`]), `null` as `-`, short lists comma-separated.
fn inline(v: &Value) -> String {
    match v {
        Value::Bare(b) if b == "null" => "-".into(),
        Value::Bare(b) => b.clone(),
        Value::Str(s) if s.is_empty() => "\"\"".into(),
        Value::Str(s) => escaped(s),
        Value::Arr(items) if items.is_empty() => "(none)".into(),
        Value::Arr(items) => items.iter().map(inline).collect::<Vec<_>>().join(", "),
        Value::Obj(m) if m.is_empty() => "(none)".into(),
        Value::Obj(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", escaped(k), inline(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// Does `v` need lines of its own (a non-empty object, or a list holding one)?
fn block(v: &Value) -> bool {
    match v {
        Value::Obj(m) => !m.is_empty(),
        Value::Arr(items) => items
            .iter()
            .any(|i| matches!(i, Value::Obj(_) | Value::Arr(_))),
        _ => false,
    }
}

fn members(out: &mut String, m: &[(String, Value)], indent: usize) {
    for (k, v) in m {
        let k = escaped(k);
        if block(v) {
            out.push_str(&format!("{:indent$}{k}:\n", ""));
            nested(out, v, indent + 2);
        } else {
            out.push_str(&format!("{:indent$}{k}: {}\n", "", inline(v)));
        }
    }
}

/// The lines of a block value at `indent`: an object's members, or a list's items each
/// behind `- ` (an object item's first member on the dash's line). Anything else, an
/// empty object or list included, is one [`inline`] line.
fn nested(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Obj(m) if !m.is_empty() => members(out, m, indent),
        Value::Arr(items) if !items.is_empty() => {
            for item in items {
                let mut sub = String::new();
                if block(item) {
                    nested(&mut sub, item, indent + 2);
                    sub.replace_range(indent..indent + 2, "- ");
                } else {
                    sub = format!("{:indent$}- {}\n", "", inline(item));
                }
                out.push_str(&sub);
            }
        }
        other => out.push_str(&format!("{:indent$}{}\n", "", inline(other))),
    }
}

/// `json` as indented text, one line per value, ending in a newline; None unless it is
/// one well-formed JSON value.
pub fn render(json: &str) -> Option<String> {
    let mut r = Reader {
        s: json.as_bytes(),
        i: 0,
    };
    let v = r.value(0)?;
    r.ws();
    if r.i != r.s.len() {
        return None;
    }
    let mut out = String::new();
    nested(&mut out, &v, 0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn objects_nest_lists_get_dashes() {
        let j = r#"{"id":"ab","load":[0.5,1,2],"temp_c":null,"facts":{"room":"kit\"chen"},"sockets":[{"kind":"tcp","rcvbuf":4},{"kind":"unix","addr":""}],"none":[],"empty":{}}"#;
        assert_eq!(
            render(j).unwrap(),
            "id: ab\nload: 0.5, 1, 2\ntemp_c: -\nfacts:\n  room: kit\"chen\nsockets:\n  - kind: tcp\n    rcvbuf: 4\n  - kind: unix\n    addr: \"\"\nnone: (none)\nempty: (none)\n"
        );
    }

    #[test]
    fn an_empty_object_or_list_is_none_not_nothing() {
        for empty in ["{}", "[]", " { } ", "[ ]"] {
            assert_eq!(render(empty).unwrap(), "(none)\n", "{empty:?}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "{\"a\":1}x",
            "[1,]",
            "nope",
            "{\"a\" 1}",
            "\"\\u12\"",
        ] {
            assert_eq!(render(bad), None, "{bad:?}");
        }
        // Numbers as RFC 8259 writes them, nothing Rust's f64 parser also takes.
        for bad in [
            "NaN",
            "inf",
            "-inf",
            "Infinity",
            "01",
            "-01",
            "+1",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "1.e5",
            "0x10",
            "1_0",
            "[1,01]",
            "{\"a\":+1}",
        ] {
            assert_eq!(render(bad), None, "{bad:?}");
        }
        for good in ["0", "-0", "10", "1.5", "-0.5e-3", "1e5", "1E+5", "2.50E-07"] {
            assert_eq!(render(good), Some(format!("{good}\n")), "{good:?}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(render(&deep), None);
        assert_eq!(render("\"a\\nb\"").unwrap(), "a\\nb\n");
    }
}
