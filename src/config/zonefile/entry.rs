//! Entries: the directives `$ORIGIN`, `$TTL`, `$INCLUDE`, and records (owner, TTL and class
//! in either order, type, data). A line starting with a blank continues with the previous
//! owner. As in Knot DNS: `$ORIGIN` takes an absolute name, a record without a TTL gets the
//! `$TTL` (or the zone's default), and an included file starts with the includer's origin
//! (or the one given) and `$TTL`, and changes neither.

use std::path::Path;

use super::fields::{bad, Fields, ScanError};
use super::lex::{Entry, Lexer, Token};
use super::{names, rdata, text, wire, Source};
use crate::config::error::{ConfigError, Origin};
use crate::config::zone::Record;

/// How deep `$INCLUDE`s may nest (a file including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 8;

/// The state a zone file is read in.
pub(super) struct Reader {
    origin: Vec<u8>,
    ttl: u32,
    owner: Option<Vec<u8>>,
    depth: usize,
}

/// A mistake at a line.
fn at(line: u32, msg: impl Into<String>) -> ScanError {
    ScanError {
        msg: msg.into().into(),
        line: Some(line),
    }
}

impl Reader {
    pub(super) fn new(origin: &[u8], ttl: u32, depth: usize) -> Self {
        Self {
            origin: origin.to_vec(),
            ttl,
            owner: None,
            depth,
        }
    }

    /// Reads every entry of `src`.
    pub(super) fn read(
        &mut self,
        src: &Source<'_>,
        out: &mut Vec<Record>,
        errs: &mut Vec<ConfigError>,
    ) {
        let place = |line: u32| Origin::new(&src.file, (src.line_of)(line));
        let mut lx = Lexer::new(src.text);
        while let Some(e) = lx.next_entry() {
            let r = match e {
                Err(e) => Err(at(e.line, e.reason)),
                Ok(e) if !e.indented && e.tokens[0].raw.starts_with(b"$") => {
                    self.directive(&e.tokens, src, out, errs)
                }
                Ok(e) => self.record(&e, src).map(|r| out.push(r)),
            };
            if let Err(e) = r {
                let line = e.line.unwrap_or(1);
                errs.push(ConfigError::new(place(line), "record", e.msg));
            }
        }
    }

    fn directive(
        &mut self,
        toks: &[Token<'_>],
        src: &Source<'_>,
        out: &mut Vec<Record>,
        errs: &mut Vec<ConfigError>,
    ) -> Result<(), ScanError> {
        let end_line = toks[toks.len() - 1].line;
        let origin = self.origin.clone();
        let mut f = Fields::new(&toks[1..], &origin, end_line);
        match toks[0].raw.to_ascii_uppercase().as_slice() {
            b"$ORIGIN" => self.origin = absolute(&f.next("origin name")?)?,
            b"$TTL" => self.ttl = f.read("TTL", text::time)?,
            b"$INCLUDE" => return self.include(&toks[0], &mut f, src, out, errs),
            _ => {
                return Err(bad(
                    &toks[0],
                    "directive",
                    "only $ORIGIN, $TTL and $INCLUDE are known",
                ))
            }
        }
        f.end()
    }

    /// `$INCLUDE file [origin]`: the file is relative to the including file's directory.
    fn include(
        &mut self,
        directive: &Token<'_>,
        f: &mut Fields<'_, '_>,
        src: &Source<'_>,
        out: &mut Vec<Record>,
        errs: &mut Vec<ConfigError>,
    ) -> Result<(), ScanError> {
        let Some(dir) = src.dir else {
            return Err(at(
                directive.line,
                "$INCLUDE is not allowed in inline records: put them in a zone file (`file = \"...\"`)",
            ));
        };
        let file = f.read("file name", text::text)?;
        let origin = match f.more() {
            true => absolute(&f.next("origin name")?)?,
            false => self.origin.clone(),
        };
        f.end()?;
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(at(
                directive.line,
                format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} files (does a file include itself?)"),
            ));
        }
        let path = dir.join(std::ffi::OsStr::new(
            &String::from_utf8_lossy(&file).into_owned(),
        ));
        crate::config::reads::note(&path);
        let text = std::fs::read(&path).map_err(|e| {
            at(
                directive.line,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let inner = Source {
            text: &text,
            file: path.display().to_string().into(),
            line_of: &|l| l,
            dir: Some(path.parent().unwrap_or(Path::new(""))),
        };
        Self::new(&origin, self.ttl, self.depth + 1).read(&inner, out, errs);
        Ok(())
    }

    fn record(&mut self, e: &Entry<'_>, src: &Source<'_>) -> Result<Record, ScanError> {
        let toks = &e.tokens;
        let (owner, mut i) = if e.indented {
            let o = self.owner.clone().ok_or_else(|| {
                at(
                    toks[0].line,
                    "no owner name: the line starts with a blank, and no record comes before it",
                )
            })?;
            (o, 0)
        } else {
            let o = text::name(toks[0].raw, &self.origin)
                .map_err(|p| bad(&toks[0], "owner name", &p))?;
            self.owner = Some(o.clone());
            (o, 1)
        };
        let ttl;
        (ttl, i) = self.ttl_and_class(toks, i)?;
        let end_line = toks[toks.len() - 1].line;
        let Some(type_tok) = toks.get(i) else {
            return Err(at(end_line, "missing type"));
        };
        let t = names::rtype(type_tok.raw).ok_or_else(|| {
            bad(
                type_tok,
                "type",
                "unknown (give TYPEnn and \\# data for others)",
            )
        })?;
        if names::is_meta(t) {
            return Err(bad(type_tok, "type", "a query or meta type, not zone data"));
        }
        let mut f = Fields::new(&toks[i + 1..], &self.origin, end_line);
        let data = rdata::parse(t, &mut f)?;
        let data_line = toks.get(i + 1).map_or(end_line, |t| t.line);
        let rdata = wire::finish(t, data)
            .map_err(|p| at(data_line, format!("bad {} data: {p}", names::rtype_name(t))))?;
        Ok(Record {
            owner: owner.to_ascii_lowercase(),
            rtype: t,
            ttl,
            rdata,
            at: Origin::new(&src.file, (src.line_of)(toks[0].line)),
        })
    }

    /// An optional TTL and an optional class, in either order, from `toks[i]`; returns the
    /// TTL and the index after them.
    fn ttl_and_class(&self, toks: &[Token<'_>], mut i: usize) -> Result<(u32, usize), ScanError> {
        let (mut ttl, mut class) = (None, false);
        while let Some(t) = toks.get(i) {
            if ttl.is_none() && t.raw.first().is_some_and(u8::is_ascii_digit) {
                ttl = Some(text::time(t.raw).map_err(|p| bad(t, "TTL", &p))?);
            } else if let Some(c) = names::class(t.raw).filter(|_| !class) {
                if c != 1 {
                    return Err(bad(t, "class", "only IN is served"));
                }
                class = true;
            } else {
                break;
            }
            i += 1;
        }
        Ok((ttl.unwrap_or(self.ttl), i))
    }
}

/// An absolute name (`$ORIGIN`, `$INCLUDE`'s origin): it must end with a dot.
fn absolute(t: &Token<'_>) -> Result<Vec<u8>, ScanError> {
    let raw = t.raw;
    let dotted = raw.last() == Some(&b'.')
        && raw[..raw.len() - 1]
            .iter()
            .rev()
            .take_while(|&&c| c == b'\\')
            .count()
            % 2
            == 0;
    if !dotted || raw == b"@" {
        return Err(bad(t, "origin", "not absolute: end it with a dot"));
    }
    text::name(raw, &[0]).map_err(|p| bad(t, "origin", &p))
}
