//! Bounded identifiers. Ids, model names and timestamps read from agent output are copied into
//! every block and event that refers to them, so one huge value repeated into many blocks would
//! turn a small input into an enormous output. Such a value is shortened to a bounded form that
//! stays unique (a prefix and a hash of the whole) and is the same wherever it is computed, so
//! live ids still equal the ids a transcript reload gives.

use std::borrow::Cow;

/// Longest identifier kept as is. Real ones (uuids, `msg_…`, `ses_…`, model names) are far shorter.
pub const MAX_IDENT_BYTES: usize = 256;

/// `s` when it is at most [`MAX_IDENT_BYTES`] long; otherwise its first 128 bytes (at a char
/// boundary), `…` and a 64-bit FNV-1a hash of the whole.
pub fn bounded(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_IDENT_BYTES {
        return Cow::Borrowed(s);
    }
    let mut cut = 128;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    Cow::Owned(format!("{}…{hash:016x}", &s[..cut]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_kept_and_long_ones_bounded_and_distinct() {
        assert_eq!(bounded("msg_01"), "msg_01");
        let a = "é".repeat(10_000);
        let b = format!("{a}x");
        assert!(bounded(&a).len() < MAX_IDENT_BYTES);
        assert_ne!(bounded(&a), bounded(&b));
        assert_eq!(bounded(&a), bounded(&a.clone()));
    }
}
