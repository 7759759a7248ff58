//! The record data tokens of one entry as a cursor: typed readers for our own record data
//! parsers, and an implementation of `domain`'s [`Scanner`] so its record data `Scan`
//! implementations read the same tokens under the same rules (Knot DNS's: no quotes outside
//! text fields, names relative to the origin with `@`).

use std::borrow::Cow;
use std::fmt;

use domain::base::charstr::CharStr;
use domain::base::name::Name;
use domain::base::scan::{ConvertSymbols, EntrySymbol, Scanner, ScannerError, Symbol};
use domain::dep::octseq::str::Str;

use super::lex::Token;
use super::text;

/// A mistake in the record data: the line of the offending token and what is wrong,
/// with the token shown.
#[derive(Debug, Clone)]
pub(crate) struct ScanError {
    pub(crate) msg: Cow<'static, str>,
    /// `None` while a `domain` scanner's error has not yet been placed at a token.
    pub(crate) line: Option<u32>,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ScanError {}

impl ScannerError for ScanError {
    fn custom(msg: &'static str) -> Self {
        Self {
            msg: Cow::Borrowed(msg),
            line: None,
        }
    }
    fn end_of_entry() -> Self {
        Self::custom("missing data at the end of the record")
    }
    fn short_buf() -> Self {
        Self::custom("record data too long")
    }
    fn trailing_tokens() -> Self {
        Self::custom("trailing data")
    }
}

impl From<domain::dep::octseq::builder::ShortBuf> for ScanError {
    fn from(_: domain::dep::octseq::builder::ShortBuf) -> Self {
        Self::short_buf()
    }
}

/// `domain`'s messages in the words of our own readers.
fn reword(msg: &str) -> &str {
    match msg {
        "expected IPv4 address" => "bad IPv4 address",
        "expected IPv6 address" => "bad IPv6 address",
        "expected decimal number" | "bad symbol" => "bad number",
        "decimal number overflow" => "number out of range",
        other => other,
    }
}

/// The record data tokens of one entry, read front to back.
pub(crate) struct Fields<'t, 'a> {
    toks: &'t [Token<'a>],
    pos: usize,
    /// The origin names are relative to (wire form).
    origin: &'t [u8],
    /// The line to report a missing field at: the last token of the entry.
    end_line: u32,
}

impl<'t, 'a> Fields<'t, 'a> {
    pub(crate) fn new(toks: &'t [Token<'a>], origin: &'t [u8], end_line: u32) -> Self {
        Self {
            toks,
            pos: 0,
            origin,
            end_line,
        }
    }

    /// The next token, not taken.
    pub(crate) fn peek(&self) -> Option<&Token<'a>> {
        self.toks.get(self.pos)
    }

    /// A mistake at the next token (or the end).
    pub(crate) fn fail(&self, msg: String) -> ScanError {
        ScanError {
            msg: msg.into(),
            line: Some(self.peek().map_or(self.end_line, |t| t.line)),
        }
    }

    /// Whether tokens are left.
    pub(crate) fn more(&self) -> bool {
        self.pos < self.toks.len()
    }

    /// The next token, or "missing WHAT".
    pub(crate) fn next(&mut self, what: &str) -> Result<Token<'a>, ScanError> {
        let t = self.toks.get(self.pos).copied().ok_or_else(|| ScanError {
            msg: format!("missing {what}").into(),
            line: Some(self.end_line),
        })?;
        self.pos += 1;
        Ok(t)
    }

    /// Reads the next token with `decode`; a failure reads `bad WHAT "token": problem`.
    pub(crate) fn read<T>(
        &mut self,
        what: &str,
        decode: impl FnOnce(&[u8]) -> Result<T, text::Problem>,
    ) -> Result<T, ScanError> {
        let t = self.next(what)?;
        decode(t.raw).map_err(|p| bad(&t, what, &p))
    }

    pub(crate) fn num(&mut self, what: &str, max: u64) -> Result<u64, ScanError> {
        self.read(what, |r| text::number(r, max))
    }

    pub(crate) fn name(&mut self, what: &str) -> Result<Vec<u8>, ScanError> {
        let origin = self.origin;
        self.read(what, |r| text::name(r, origin))
    }

    /// The remaining tokens, each decoded by `decode` and concatenated; at least one.
    pub(crate) fn rest(
        &mut self,
        what: &str,
        decode: impl Fn(&[u8]) -> Result<Vec<u8>, text::Problem>,
    ) -> Result<Vec<u8>, ScanError> {
        let mut out = self.read(what, &decode)?;
        while self.more() {
            out.extend(self.read(what, &decode)?);
        }
        Ok(out)
    }

    /// Fails on a token left over.
    pub(crate) fn end(&self) -> Result<(), ScanError> {
        match self.toks.get(self.pos) {
            Some(t) => Err(ScanError {
                msg: format!("unexpected {} after the record data", t.show()).into(),
                line: Some(t.line),
            }),
            None => Ok(()),
        }
    }

    /// Places an error of a `domain` scanner at the last token read (or the end).
    pub(crate) fn place(&self, e: ScanError) -> ScanError {
        if e.line.is_some() {
            return e;
        }
        match self.pos.checked_sub(1).and_then(|i| self.toks.get(i)) {
            Some(t) => bad_token(t, reword(&e.msg)),
            None => ScanError {
                msg: e.msg,
                line: Some(self.end_line),
            },
        }
    }

    /// The next token as unquoted symbols (numbers, mnemonics, hex and base64 digits).
    fn symbols(&mut self) -> Result<(Token<'a>, Vec<Symbol>), ScanError> {
        let t = self.next("data")?;
        if t.is_quoted() {
            return Err(bad_token(&t, "unexpected quoted string"));
        }
        let mut v = Vec::with_capacity(t.raw.len());
        let mut i = 0;
        while let Some((sym, next)) =
            Symbol::from_slice_index(t.raw, i).map_err(|e| bad_token(&t, e.as_str()))?
        {
            v.push(sym);
            i = next;
        }
        Ok((t, v))
    }
}

/// `bad WHAT "token": problem`.
pub(crate) fn bad(t: &Token<'_>, what: &str, problem: &str) -> ScanError {
    ScanError {
        msg: format!("bad {what} {}: {problem}", t.show()).into(),
        line: Some(t.line),
    }
}

/// `MESSAGE "token"`.
fn bad_token(t: &Token<'_>, msg: &str) -> ScanError {
    ScanError {
        msg: format!("{msg} {}", t.show()).into(),
        line: Some(t.line),
    }
}

impl Scanner for Fields<'_, '_> {
    type Octets = Vec<u8>;
    type OctetsBuilder = Vec<u8>;
    type Name = Name<Vec<u8>>;
    type Error = ScanError;

    fn has_space(&self) -> bool {
        true
    }

    fn continues(&mut self) -> bool {
        self.more()
    }

    fn scan_symbols<F>(&mut self, mut op: F) -> Result<(), ScanError>
    where
        F: FnMut(Symbol) -> Result<(), ScanError>,
    {
        let (t, syms) = self.symbols()?;
        for s in syms {
            op(s).map_err(|e| bad_token(&t, reword(&e.msg)))?;
        }
        Ok(())
    }

    fn scan_entry_symbols<F>(&mut self, mut op: F) -> Result<(), ScanError>
    where
        F: FnMut(EntrySymbol) -> Result<(), ScanError>,
    {
        while self.more() {
            let (t, syms) = self.symbols()?;
            for s in syms {
                op(s.into()).map_err(|e| bad_token(&t, reword(&e.msg)))?;
            }
            op(EntrySymbol::EndOfToken).map_err(|e| bad_token(&t, reword(&e.msg)))?;
        }
        Ok(())
    }

    fn convert_token<C: ConvertSymbols<Symbol, ScanError>>(
        &mut self,
        mut convert: C,
    ) -> Result<Vec<u8>, ScanError> {
        let (t, syms) = self.symbols()?;
        let mut out = Vec::new();
        let fail = |e: ScanError| bad_token(&t, reword(&e.msg));
        for s in syms {
            out.extend_from_slice(convert.process_symbol(s).map_err(fail)?.unwrap_or(&[]));
        }
        out.extend_from_slice(convert.process_tail().map_err(fail)?.unwrap_or(&[]));
        Ok(out)
    }

    fn convert_entry<C: ConvertSymbols<EntrySymbol, ScanError>>(
        &mut self,
        mut convert: C,
    ) -> Result<Vec<u8>, ScanError> {
        let mut out = Vec::new();
        while self.more() {
            let (t, syms) = self.symbols()?;
            let fail = |e: ScanError| bad_token(&t, reword(&e.msg));
            for s in syms.into_iter().map(EntrySymbol::from) {
                out.extend_from_slice(convert.process_symbol(s).map_err(fail)?.unwrap_or(&[]));
            }
        }
        out.extend_from_slice(
            convert
                .process_tail()
                .map_err(|e| self.place(e))?
                .unwrap_or(&[]),
        );
        Ok(out)
    }

    /// An unquoted token without escapes, as written (addresses and the like).
    fn scan_octets(&mut self) -> Result<Vec<u8>, ScanError> {
        let t = self.next("data")?;
        if t.is_quoted() || t.raw.contains(&b'\\') {
            return Err(bad_token(&t, "unexpected quote or escape in"));
        }
        Ok(t.raw.to_vec())
    }

    fn scan_ascii_str<F, T>(&mut self, op: F) -> Result<T, ScanError>
    where
        F: FnOnce(&str) -> Result<T, ScanError>,
    {
        let raw = self.scan_octets()?;
        let s =
            std::str::from_utf8(&raw).map_err(|_| self.place(Self::Error::custom("not ASCII")))?;
        op(s).map_err(|e| self.place(e))
    }

    fn scan_name(&mut self) -> Result<Self::Name, ScanError> {
        let wire = self.name("name")?;
        Ok(Name::from_octets(wire).expect("text::name builds valid names"))
    }

    fn scan_charstr(&mut self) -> Result<CharStr<Vec<u8>>, ScanError> {
        let v = self.read("character-string", text::charstr)?;
        Ok(CharStr::from_octets(v).expect("text::charstr keeps to 255 octets"))
    }

    fn scan_string(&mut self) -> Result<Str<Vec<u8>>, ScanError> {
        let t = self.next("string")?;
        let v = text::text(t.raw).map_err(|p| bad(&t, "string", &p))?;
        Str::from_utf8(v).map_err(|_| bad_token(&t, "not UTF-8:"))
    }

    fn scan_charstr_entry(&mut self) -> Result<Vec<u8>, ScanError> {
        let mut out = Vec::new();
        loop {
            let v = self.read("character-string", text::charstr)?;
            out.push(v.len() as u8);
            out.extend_from_slice(&v);
            if !self.more() {
                return Ok(out);
            }
        }
    }

    fn scan_opt_unknown_marker(&mut self) -> Result<bool, ScanError> {
        Ok(false) // `\#` is read before any type's scanner runs
    }

    fn octets_builder(&mut self) -> Result<Vec<u8>, ScanError> {
        Ok(Vec::new())
    }
}
