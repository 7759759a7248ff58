//! A reader for the common shape of included files, beside the `toml` crate: the
//! `[[access-domain]]` and `[access-domain.lines]` headers, `key = value` lines whose values
//! are strings without escapes, decimal integers, booleans, arrays of those and one-line
//! inline tables (`{ pool = "p1", weight = 2 }`), comments and blank lines. It builds the
//! same [`AccessDomainSpec`]s with the same spans as the `toml` crate, one access domain at
//! a time, without the crate's token, event and tree vectors (about 25 times the file).
//!
//! Anything else, valid or not (escapes, multi-line strings, dotted or quoted keys, floats,
//! dates, another header, a key given twice, a field unknown or of the wrong type, a
//! missing one), makes it give the whole file up with [`Unsupported`]: the caller then
//! parses the file with the `toml` crate, so every error message is that crate's by
//! construction, and what this reader accepts the crate reads the same (tested against it
//! on generated and mutated files, and fuzzed: `bench/fuzz`, target `include`).

use std::collections::BTreeMap;

use toml::Spanned;

use crate::config::spec::AccessDomainSpec;

/// The text goes beyond what this reader handles (or is not valid): read it with `toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsupported;

type Read<T> = Result<T, Unsupported>;

/// Reads `text`, handing each access domain to `each` as soon as its table ends; on
/// [`Unsupported`] some may have been handed over already, and are to be discarded. The
/// strings and vectors of one access domain's spec are reused for the next: a million
/// access domains cost a few allocations each instead of some thirty.
pub(crate) fn read(text: &str, mut each: impl FnMut(&AccessDomainSpec)) -> Read<()> {
    let mut r = Reader {
        text,
        b: text.as_bytes(),
        i: 0,
        strings: Vec::new(),
        lists: Vec::new(),
    };
    let mut cur: Option<Partial> = None;
    let mut in_lines = false;
    loop {
        r.skip_ws();
        match r.peek() {
            None => break,
            Some(b'\n') => r.i += 1,
            Some(b'\r') => r.crlf()?,
            Some(b'#') => r.comment()?,
            Some(b'[') => {
                let start = r.i;
                if r.eat(b"[[access-domain]]") {
                    if let Some(p) = cur.take() {
                        let spec = p.finish()?;
                        each(&spec);
                        r.recycle(spec);
                    }
                    cur = Some(Partial::default());
                    in_lines = false;
                } else if r.eat(b"[access-domain.lines]") {
                    let p = cur.as_mut().ok_or(Unsupported)?;
                    set(&mut p.lines, Spanned::new(start..r.i, BTreeMap::new()))?;
                    in_lines = true;
                } else {
                    return Err(Unsupported);
                }
                r.line_end()?;
            }
            Some(_) => {
                let p = cur.as_mut().ok_or(Unsupported)?;
                let key = r.key()?;
                r.skip_ws();
                r.expect(b'=')?;
                r.skip_ws();
                if in_lines {
                    r.line_route(p, key)?;
                } else {
                    r.field(p, key)?;
                }
                r.line_end()?;
            }
        }
    }
    if let Some(p) = cur {
        each(&p.finish()?);
    }
    Ok(())
}

/// An access domain's fields as read so far.
#[derive(Default)]
struct Partial {
    name: Option<Spanned<String>>,
    rtype: Option<Spanned<String>>,
    ttl: Option<Spanned<i64>>,
    enabled: Option<bool>,
    remarks: Option<String>,
    policy: Option<Spanned<String>>,
    preemptive: Option<bool>,
    pools: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    lines: Option<Spanned<crate::config::spec::LineRoutes>>,
    fallback: Option<Spanned<String>>,
    fallback_pool: Option<Spanned<String>>,
}

impl Partial {
    /// The spec, or [`Unsupported`] when a required field is missing (the `toml` crate
    /// names it).
    fn finish(self) -> Read<AccessDomainSpec> {
        Ok(AccessDomainSpec {
            name: self.name.ok_or(Unsupported)?,
            rtype: self.rtype.ok_or(Unsupported)?,
            ttl: self.ttl,
            enabled: self.enabled,
            remarks: self.remarks,
            policy: self.policy.ok_or(Unsupported)?,
            preemptive: self.preemptive,
            pools: self.pools,
            lines: self.lines,
            fallback: self.fallback,
            fallback_pool: self.fallback_pool,
        })
    }
}

/// Fills a field given once; a second time is the `toml` crate's "duplicate key".
fn set<T>(slot: &mut Option<T>, v: T) -> Read<()> {
    if slot.is_some() {
        return Err(Unsupported);
    }
    *slot = Some(v);
    Ok(())
}

/// A cursor over the text, and the spare strings and pool lists of the access domains
/// handed over.
struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    strings: Vec<String>,
    lists: Vec<Vec<Spanned<String>>>,
}

impl<'a> Reader<'a> {
    /// Keeps the strings and pool lists of a spec handed over, for the next ones.
    fn recycle(&mut self, spec: AccessDomainSpec) {
        let strings = [spec.name, spec.rtype, spec.policy]
            .into_iter()
            .chain(spec.fallback)
            .chain(spec.fallback_pool)
            .map(Spanned::into_inner)
            .chain(spec.remarks);
        self.strings.extend(strings);
        for (line, pools) in spec.lines.map(Spanned::into_inner).unwrap_or_default() {
            self.strings.push(line);
            let mut pools = pools.into_inner();
            self.strings
                .extend(pools.drain(..).map(Spanned::into_inner));
            self.lists.push(pools);
        }
    }

    /// `s` in a spare string.
    fn owned(&mut self, s: &str) -> String {
        let mut o = self.strings.pop().unwrap_or_default();
        o.clear();
        o.push_str(s);
        o
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, s: &[u8]) -> bool {
        let ok = self.b[self.i..].starts_with(s);
        if ok {
            self.i += s.len();
        }
        ok
    }

    fn expect(&mut self, c: u8) -> Read<()> {
        if self.peek() != Some(c) {
            return Err(Unsupported);
        }
        self.i += 1;
        Ok(())
    }

    /// Spaces and tabs (TOML's whitespace).
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// CR LF; a CR alone is not a newline.
    fn crlf(&mut self) -> Read<()> {
        if !self.eat(b"\r\n") {
            return Err(Unsupported);
        }
        Ok(())
    }

    /// A comment up to (not including) its newline: tabs and printable characters only.
    fn comment(&mut self) -> Read<()> {
        self.i += 1;
        while let Some(c) = self.peek() {
            match c {
                b'\n' => break,
                b'\r' if self.b.get(self.i + 1) == Some(&b'\n') => break,
                b'\t' | 0x20..=0x7E | 0x80.. => self.i += 1,
                _ => return Err(Unsupported),
            }
        }
        Ok(())
    }

    /// After a header or a value: whitespace, then a comment, a newline or the end.
    fn line_end(&mut self) -> Read<()> {
        self.skip_ws();
        match self.peek() {
            None | Some(b'\n' | b'\r' | b'#') => Ok(()),
            Some(_) => Err(Unsupported),
        }
    }

    /// Whitespace, newlines and comments, as allowed between array values.
    fn skip_blank(&mut self) -> Read<()> {
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'\n') => self.i += 1,
                Some(b'\r') => self.crlf()?,
                Some(b'#') => self.comment()?,
                _ => return Ok(()),
            }
        }
    }

    /// A bare key (`A-Za-z0-9_-`).
    fn key(&mut self) -> Read<&'a str> {
        let start = self.i;
        while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-') = self.peek() {
            self.i += 1;
        }
        if self.i == start {
            return Err(Unsupported);
        }
        Ok(&self.text[start..self.i])
    }

    /// After an integer or a boolean: something that ends a value.
    fn value_end(&self) -> Read<()> {
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'#' | b',' | b']' | b'}') => Ok(()),
            Some(_) => Err(Unsupported),
        }
    }

    /// A basic string without escapes or a literal string, on one line; its span holds
    /// the quotes.
    fn string(&mut self) -> Read<Spanned<String>> {
        let start = self.i;
        let q = match self.peek() {
            Some(q @ (b'"' | b'\'')) => q,
            _ => return Err(Unsupported),
        };
        if self.b[self.i..].starts_with(&[q, q, q]) {
            return Err(Unsupported); // multi-line
        }
        self.i += 1;
        loop {
            match self.peek() {
                Some(c) if c == q => break,
                Some(b'\\') if q == b'"' => return Err(Unsupported),
                Some(b'\t' | 0x20..=0x7E | 0x80..) => self.i += 1,
                _ => return Err(Unsupported),
            }
        }
        self.i += 1;
        let s = self.owned(&self.text[start + 1..self.i - 1]);
        Ok(Spanned::new(start..self.i, s))
    }

    /// A decimal integer: an optional `-`, no leading zero, no `_`, within i64.
    fn integer(&mut self) -> Read<Spanned<i64>> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        let n = self.i - digits;
        if n == 0 || (n > 1 && self.b[digits] == b'0') {
            return Err(Unsupported);
        }
        self.value_end()?;
        let v = self.text[start..self.i].parse().map_err(|_| Unsupported)?;
        Ok(Spanned::new(start..self.i, v))
    }

    fn boolean(&mut self) -> Read<bool> {
        let v = if self.eat(b"true") {
            true
        } else if self.eat(b"false") {
            false
        } else {
            return Err(Unsupported);
        };
        self.value_end()?;
        Ok(v)
    }

    /// `[ item, ... ]` into `v` (empty), over lines, with comments and a trailing comma
    /// allowed.
    fn array<T>(
        &mut self,
        mut v: Vec<T>,
        mut item: impl FnMut(&mut Self) -> Read<T>,
    ) -> Read<Spanned<Vec<T>>> {
        let start = self.i;
        self.expect(b'[')?;
        loop {
            self.skip_blank()?;
            if self.peek() == Some(b']') {
                break;
            }
            v.push(item(self)?);
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => break,
                _ => return Err(Unsupported),
            }
        }
        self.i += 1;
        Ok(Spanned::new(start..self.i, v))
    }

    /// A string, integer or boolean as a `toml::Value`, with its span.
    fn scalar(&mut self) -> Read<Spanned<toml::Value>> {
        let start = self.i;
        let v = match self.peek() {
            Some(b'"' | b'\'') => toml::Value::String(self.string()?.into_inner()),
            Some(b't' | b'f') => toml::Value::Boolean(self.boolean()?),
            Some(b'-' | b'0'..=b'9') => toml::Value::Integer(self.integer()?.into_inner()),
            _ => return Err(Unsupported),
        };
        Ok(Spanned::new(start..self.i, v))
    }

    /// `{ key = scalar, ... }` on one line, without a trailing comma.
    fn inline_table(&mut self) -> Read<Spanned<toml::Value>> {
        let start = self.i;
        self.expect(b'{')?;
        self.skip_ws();
        let mut t = toml::map::Map::new();
        if self.peek() != Some(b'}') {
            loop {
                let k = self.key()?;
                self.skip_ws();
                self.expect(b'=')?;
                self.skip_ws();
                let v = self.scalar()?.into_inner();
                if t.insert(k.to_string(), v).is_some() {
                    return Err(Unsupported);
                }
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.skip_ws();
                    }
                    Some(b'}') => break,
                    _ => return Err(Unsupported),
                }
            }
        }
        self.i += 1;
        Ok(Spanned::new(start..self.i, toml::Value::Table(t)))
    }

    /// `pools`: names, or inline tables (`{ pool = "NAME", weight = N }`), or any scalar
    /// (which validation then rejects, as it does the `toml` crate's).
    fn pool(&mut self) -> Read<Spanned<toml::Value>> {
        if self.peek() == Some(b'{') {
            self.inline_table()
        } else {
            self.scalar()
        }
    }

    /// A field of `[[access-domain]]`.
    fn field(&mut self, p: &mut Partial, key: &str) -> Read<()> {
        match key {
            "name" => set(&mut p.name, self.string()?),
            "type" => set(&mut p.rtype, self.string()?),
            "policy" => set(&mut p.policy, self.string()?),
            "fallback" => set(&mut p.fallback, self.string()?),
            "fallback-pool" => set(&mut p.fallback_pool, self.string()?),
            "remarks" => set(&mut p.remarks, self.string()?.into_inner()),
            "ttl" => set(&mut p.ttl, self.integer()?),
            "enabled" => set(&mut p.enabled, self.boolean()?),
            "preemptive" => set(&mut p.preemptive, self.boolean()?),
            "pools" => set(&mut p.pools, self.array(Vec::new(), Self::pool)?),
            _ => Err(Unsupported),
        }
    }

    /// A `line = ["pool", ...]` of `[access-domain.lines]`.
    fn line_route(&mut self, p: &mut Partial, key: &str) -> Read<()> {
        let spare = self.lists.pop().unwrap_or_default();
        let pools = self.array(spare, Self::string)?;
        let key = self.owned(key);
        let lines = p.lines.as_mut().ok_or(Unsupported)?.get_mut();
        if lines.contains_key(&key) {
            return Err(Unsupported);
        }
        lines.insert(key, pools);
        Ok(())
    }
}

/// For fuzzing (`bench/fuzz`, target `include`): panics when the reader takes `text` and
/// the `toml` crate rejects it or reads other specs (spans included).
#[doc(hidden)]
pub fn assert_agrees_with_toml(text: &str) {
    let mut specs = Vec::new();
    if read(text, |s| specs.push(format!("{s:?}"))).is_err() {
        return;
    }
    let spec: crate::config::spec::IncludeSpec = match toml::from_str(text) {
        Ok(s) => s,
        Err(e) => panic!("the reader took what toml rejects ({e}):\n{text}"),
    };
    let by_toml: Vec<String> = spec
        .access_domain
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    assert_eq!(specs, by_toml, "specs differ for:\n{text}");
}
