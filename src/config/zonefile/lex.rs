//! The lexer: zone file text to entries (one record or directive each) of tokens, with the
//! line each token starts on. RFC 1035 5.1 as Knot DNS reads it: blanks separate tokens, a
//! newline ends the entry unless a `(` is open, `;` starts a comment, `"` quotes (blanks and
//! `;` inside), `\` escapes the next octet. Tokens keep their quotes and escapes: what they
//! mean depends on the field (a name, a number, a character-string), so the readers of
//! fields decode them ([`super::text`]).

/// One token as written: quotes and escapes kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    /// The octets of the token.
    pub(crate) raw: &'a [u8],
    /// The 1-based line it starts on.
    pub(crate) line: u32,
}

impl Token<'_> {
    /// Whether the token starts with a double quote.
    pub(crate) fn is_quoted(&self) -> bool {
        self.raw.first() == Some(&b'"')
    }

    /// The token for messages: `"1.2.3"` (quotes added unless it is quoted already), octets
    /// other than printable ASCII as `\DDD`, cut after 60 octets.
    pub(crate) fn show(&self) -> String {
        let mut s = String::new();
        for &c in self.raw.iter().take(60) {
            match c {
                b' '..=b'~' => s.push(c as char),
                _ => s.push_str(&format!("\\{c:03}")),
            }
        }
        if self.raw.len() > 60 {
            s.push_str("...");
        }
        if self.is_quoted() {
            s
        } else {
            format!("\"{s}\"")
        }
    }
}

/// One record or directive: its tokens, and whether its line starts with a blank (the
/// previous owner is meant).
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) tokens: Vec<Token<'a>>,
    pub(crate) indented: bool,
}

/// A lexical mistake, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub(crate) line: u32,
    pub(crate) reason: String,
}

/// Splits zone file text into entries.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a [u8]) -> Self {
        Self {
            src,
            pos: 0,
            line: 1,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn err(&self, line: u32, reason: impl Into<String>) -> LexError {
        LexError {
            line,
            reason: reason.into(),
        }
    }

    /// The next entry, a mistake (the lexer then skips the rest of that entry), or `None`
    /// at the end.
    pub(crate) fn next_entry(&mut self) -> Option<Result<Entry<'a>, LexError>> {
        let mut tokens = Vec::new();
        let mut indented = false;
        let mut open: Option<u32> = None;
        let mut line_start = self.pos;
        loop {
            let Some(c) = self.peek() else {
                if let Some(l) = open {
                    return Some(Err(
                        self.err(l, "'(' is never closed: the file ends inside this record")
                    ));
                }
                return (!tokens.is_empty()).then_some(Ok(Entry { tokens, indented }));
            };
            match c {
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    if open.is_none() {
                        if !tokens.is_empty() {
                            return Some(Ok(Entry { tokens, indented }));
                        }
                        line_start = self.pos;
                    }
                }
                b' ' | b'\t' => self.pos += 1,
                b';' => self.skip_comment(),
                b'\r' => {
                    return Some(Err(
                        self.fail(open, "carriage return: use LF line endings, not CRLF")
                    ))
                }
                b'(' if open.is_some() => {
                    return Some(Err(
                        self.fail(open, "'(' inside '(': parentheses do not nest")
                    ))
                }
                b'(' => {
                    open = Some(self.line);
                    self.pos += 1;
                }
                b')' if open.is_none() => return Some(Err(self.fail(open, "')' without '('"))),
                b')' => {
                    open = None;
                    self.pos += 1;
                }
                _ => {
                    if tokens.is_empty() {
                        indented = self.pos != line_start;
                    }
                    match self.token(open.is_some()) {
                        Ok(t) => tokens.push(t),
                        Err(e) => return Some(Err(self.recover(open, e))),
                    }
                }
            }
        }
    }

    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != b'\n') {
            self.pos += 1;
        }
    }

    /// An error at the current line; the rest of the entry is skipped.
    fn fail(&mut self, open: Option<u32>, reason: &str) -> LexError {
        let e = self.err(self.line, reason);
        self.recover(open, e)
    }

    /// Skips the rest of a broken entry: to the end of the line, or past the `)` that
    /// closes an open parenthesis and then to the end of that line.
    fn recover(&mut self, open: Option<u32>, e: LexError) -> LexError {
        let mut open = open.is_some();
        while let Some(c) = self.peek() {
            match c {
                b'\n' if !open => break,
                b'\n' => self.line += 1,
                b')' => open = false,
                b';' => {
                    self.skip_comment();
                    continue;
                }
                _ => {}
            }
            self.pos += 1;
        }
        e
    }

    /// One token: octets up to a blank, newline, `;`, `(` or `)`, with quoted parts and
    /// escaped octets taken whole.
    fn token(&mut self, in_parens: bool) -> Result<Token<'a>, LexError> {
        let start = self.pos;
        let line = self.line;
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b';' | b'(' | b')' => break,
                b'\\' => self.escape()?,
                b'"' => self.quoted(in_parens)?,
                _ => self.pos += 1,
            }
        }
        Ok(Token {
            raw: &self.src[start..self.pos],
            line,
        })
    }

    fn escape(&mut self) -> Result<(), LexError> {
        match self.src.get(self.pos + 1) {
            None => Err(self.err(self.line, "'\\' at the end of the file")),
            Some(b'\n') => Err(self.err(self.line, "'\\' at the end of a line")),
            Some(_) => {
                self.pos += 2;
                Ok(())
            }
        }
    }

    /// A quoted part, from `"` to the next unescaped `"`. A newline inside is allowed
    /// only within parentheses (as Knot DNS does).
    fn quoted(&mut self, in_parens: bool) -> Result<(), LexError> {
        let line = self.line;
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err(self.err(line, "'\"' is never closed: the file ends inside this string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(b'\n') if !in_parens => {
                    return Err(self.err(
                        line,
                        "'\"' is not closed on its line (a string may span lines only inside parentheses)",
                    ))
                }
                Some(b'\n') => {
                    self.line += 1;
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lexed = Result<(bool, Vec<(String, u32)>), (u32, String)>;

    fn entries(src: &str) -> Vec<Lexed> {
        let mut lx = Lexer::new(src.as_bytes());
        let mut v = Vec::new();
        while let Some(e) = lx.next_entry() {
            v.push(
                e.map(|e| {
                    let toks = e
                        .tokens
                        .iter()
                        .map(|t| (String::from_utf8_lossy(t.raw).into_owned(), t.line))
                        .collect();
                    (e.indented, toks)
                })
                .map_err(|e| (e.line, e.reason)),
            );
        }
        v
    }

    fn toks(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(s, l)| (s.to_string(), *l)).collect()
    }

    #[test]
    fn entries_lines_and_parentheses() {
        let e = entries("a A 1.2.3.4 ; c\n\n  ; only\n b ( TXT \"x y\"\n \"z;\" ) \nc\\ d\tMX 1 @");
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            Ok((false, toks(&[("a", 1), ("A", 1), ("1.2.3.4", 1)])))
        );
        assert_eq!(
            e[1],
            Ok((
                true,
                toks(&[("b", 4), ("TXT", 4), ("\"x y\"", 4), ("\"z;\"", 5)])
            ))
        );
        assert_eq!(
            e[2],
            Ok((false, toks(&[("c\\ d", 6), ("MX", 6), ("1", 6), ("@", 6)])))
        );
    }

    #[test]
    fn mistakes_are_reported_and_skipped() {
        let e = entries("a TXT ( \"x\"\nb A 1\n");
        assert_eq!(
            e,
            vec![Err((
                1,
                "'(' is never closed: the file ends inside this record".into()
            ))]
        );
        let e = entries("a ) b\nc A 1\n");
        assert_eq!(e[0], Err((1, "')' without '('".into())));
        assert_eq!(e[1], Ok((false, toks(&[("c", 2), ("A", 2), ("1", 2)]))));
        let e = entries("a TXT \"x\ny A 1\n");
        assert!(matches!(&e[0], Err((1, _))));
        assert_eq!(e[1], Ok((false, toks(&[("y", 2), ("A", 2), ("1", 2)]))));
        let e = entries("a ( ( b )\nc A 1\n");
        assert!(matches!(&e[0], Err((1, _))));
        assert_eq!(e.len(), 2);
        let e = entries("a TXT \"abc");
        assert_eq!(e.len(), 1);
        assert!(e[0].is_err());
        assert!(entries("a TXT x\\").iter().any(Result::is_err));
        assert!(entries("a A 1\r\n").iter().any(Result::is_err));
    }
}
