//! The zone file reader (RFC 1035 5, as Knot DNS 3.2 reads it): zone text to [`Record`]s,
//! every mistake as a [`ConfigError`] at the line of the offending token.
//!
//! * [`lex`]: text to entries of tokens with their lines (quotes, escapes, parentheses,
//!   comments);
//! * [`entry`]: directives (`$ORIGIN`, `$TTL`, `$INCLUDE`), owner, TTL, class, type;
//! * [`rdata`]: record data to wire form, through `domain`'s scanners where they read what
//!   Knot DNS reads ([`fields`] is our tokens as a `domain` `Scanner`), our own per-type
//!   readers elsewhere ([`special`], [`svcb`]); [`wire`] checks the result per type;
//! * [`text`], [`names`]: decoding single tokens and mnemonics.

mod entry;
mod fields;
mod lex;
mod names;
mod rdata;
mod special;
mod svcb;
mod text;
mod wire;

use std::path::Path;
use std::sync::Arc;

use super::error::ConfigError;
use super::zone::Record;

/// Zone text and where it came from.
pub(crate) struct Source<'a> {
    /// The text (a zone file is read as bytes: only ASCII is meaningful outside comments).
    pub(crate) text: &'a [u8],
    /// The file named in messages.
    pub(crate) file: Arc<str>,
    /// Maps a line of `text` to the line reported (inline records start mid-file).
    pub(crate) line_of: &'a dyn Fn(u32) -> u32,
    /// The directory `$INCLUDE` paths are relative to; `None`: `$INCLUDE` is refused
    /// (inline records in the TOML).
    pub(crate) dir: Option<&'a Path>,
}

/// Reads zone text: records go to `out`, mistakes to `errs` (reading goes on after one).
/// Names relative to `origin` (wire form); records without a TTL get `default_ttl` until a
/// `$TTL`.
pub(crate) fn read(
    src: &Source<'_>,
    origin: &[u8],
    default_ttl: u32,
    out: &mut Vec<Record>,
    errs: &mut Vec<ConfigError>,
) {
    entry::Reader::new(origin, default_ttl, 0).read(src, out, errs);
}

#[cfg(test)]
mod tests {
    use super::*;

    const RICH: &[u8] = include_bytes!("../../../tests/zonefile/ok-every-type.zone");
    const ORIGIN: &[u8] = b"\x01z\x04test\x00";

    fn load(text: &[u8]) -> (Vec<Record>, Vec<ConfigError>) {
        let src = Source {
            text,
            file: "rich.zone".into(),
            line_of: &|l| l,
            dir: None,
        };
        let (mut out, mut errs) = (Vec::new(), Vec::new());
        read(&src, ORIGIN, 3600, &mut out, &mut errs);
        (out, errs)
    }

    /// The whole file loads; every prefix of it (the file cut at any octet) loads or gives
    /// errors at lines it has, and never panics.
    #[test]
    fn every_truncation_of_a_rich_file() {
        let (all, errs) = load(RICH);
        assert!(errs.is_empty(), "{errs:?}");
        assert!(all.len() > 50);
        for cut in 0..RICH.len() {
            let prefix = &RICH[..cut];
            let (recs, errs) = load(prefix);
            let lines = prefix.iter().filter(|&&c| c == b'\n').count() as u32 + 1;
            assert!(recs.len() <= all.len());
            for e in &errs {
                assert!(
                    e.at.line <= lines,
                    "cut at {cut}: {e} (the prefix has {lines} lines)"
                );
            }
        }
    }

    /// The file with octets replaced by ones that matter to the reader (quotes, escapes,
    /// parentheses, digits, separators), a few at a time: never a panic.
    #[test]
    fn mutations_of_a_rich_file_never_panic() {
        const SPECIAL: &[u8] = b"\\\"();\n\t .@#$*-=,:/0123456789aAzZ\x80\x00\r";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut text = RICH.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % text.len() as u64) as usize;
                text[at] = SPECIAL[(next() % SPECIAL.len() as u64) as usize];
            }
            load(&text);
        }
    }
}
