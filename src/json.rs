//! ASCII-only JSON: non-ASCII characters written as `\uXXXX` escapes.
//!
//! A JS string made from ASCII bytes is a plain copy for V8 (latin1), while UTF-8 must be
//! transcoded; for a 40 MB conversation that is the difference between ~10 ms and ~200 ms on
//! the JS thread. The output is ordinary JSON that any parser reads back identically.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, Serializer};

struct AsciiFormatter;

impl Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    // Everything else as compact JSON.
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        CompactFormatter.begin_array(w)
    }
}

/// Serialize `value` as compact JSON containing only ASCII.
pub fn to_ascii_string<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(128);
    value
        .serialize(&mut Serializer::with_formatter(&mut out, AsciiFormatter))
        .expect("serializing to memory does not fail");
    // Only ASCII was written.
    String::from_utf8(out).expect("ASCII is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn round_trips_and_is_ascii() {
        let v = json!({"a": "héllo 😀 \"q\" \n", "b": [1, 2.5, null, true], "ü": {}});
        let s = to_ascii_string(&v);
        assert!(s.is_ascii(), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
        assert_eq!(to_ascii_string(&json!([1, "x"])), r#"[1,"x"]"#);
    }
}
