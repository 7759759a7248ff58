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
