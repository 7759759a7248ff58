//! What every table's `validate` works with: a [`Ctx`] that knows the file being read
//! (the config file or an included one), turns a span into `file:line`, resolves paths
//! against the config file's folder and collects the errors; and the checks the tables
//! share (a number in range, a duration, one keyword of a list), each giving the same
//! `file:line: field: reason` a person can act on.

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::error::{ConfigError, Lines, Origin};

/// The validation context of one file.
pub(super) struct Ctx<'a> {
    /// The file being validated, as named in messages.
    pub(super) file: &'a Arc<str>,
    /// Its line starts, to turn spans into line numbers.
    pub(super) lines: &'a Lines,
    /// The config file's folder: relative paths start there.
    pub(super) base: &'a Path,
    /// Files read from here rather than from disk (see [`super::Overlay`]).
    pub(super) overlay: &'a super::Overlay,
    /// Every mistake found so far (sorted by file and line once all are in).
    pub(super) errs: &'a mut Vec<ConfigError>,
}

impl Ctx<'_> {
    /// Where `span` of this file is.
    pub(super) fn origin(&self, span: Range<usize>) -> Origin {
        Origin::new(self.file, self.lines.line(span.start))
    }

    /// Where `s` was written.
    pub(super) fn at<T>(&self, s: &Spanned<T>) -> Origin {
        self.origin(s.span())
    }

    /// Reports a mistake at `s`.
    pub(super) fn err<T>(
        &mut self,
        s: &Spanned<T>,
        field: impl Into<String>,
        why: impl Into<String>,
    ) {
        let at = self.at(s);
        self.push(at, field, why);
    }

    /// Reports a mistake at `at`.
    pub(super) fn push(&mut self, at: Origin, field: impl Into<String>, why: impl Into<String>) {
        self.errs.push(ConfigError::new(at, field, why));
    }

    /// A path from the config, relative to the config file's folder.
    pub(super) fn path(&self, p: &str) -> PathBuf {
        super::relative_to(self.base, p)
    }

    /// `value`, or (when the check gave none) the error `why()` at `v`: the one shape of
    /// every check below.
    pub(super) fn check<V, T>(
        &mut self,
        v: &Spanned<V>,
        field: &str,
        value: Option<T>,
        why: impl FnOnce() -> String,
    ) -> Option<T> {
        if value.is_none() {
            self.err(v, field, why());
        }
        value
    }

    /// An optional integer setting in `ok`; out of it: "N is outside LO..=HI".
    pub(super) fn int<T: TryFrom<i64>>(
        &mut self,
        v: &Option<Spanned<i64>>,
        field: &str,
        ok: RangeInclusive<i64>,
    ) -> Option<T> {
        self.int_noted(v, field, ok, "")
    }

    /// [`Self::int`] with `note` after the range in the error.
    pub(super) fn int_noted<T: TryFrom<i64>>(
        &mut self,
        v: &Option<Spanned<i64>>,
        field: &str,
        ok: RangeInclusive<i64>,
        note: &str,
    ) -> Option<T> {
        let v = v.as_ref()?;
        let n = *v.get_ref();
        let value = ok.contains(&n).then(|| T::try_from(n).ok()).flatten();
        self.check(v, field, value, || {
            format!("{n} is outside {}..={}{note}", ok.start(), ok.end())
        })
    }

    /// An optional duration setting in seconds, within `ok`; out of it:
    /// "S seconds is outside RANGE" and `note`.
    pub(super) fn seconds(
        &mut self,
        v: &Option<Spanned<f64>>,
        field: &str,
        ok: Seconds,
        note: &str,
    ) -> Option<Duration> {
        let v = v.as_ref()?;
        let s = *v.get_ref();
        let value = ok.contains(s).then(|| Duration::from_secs_f64(s));
        self.check(v, field, value, || {
            format!("{s} seconds is outside {ok}{note}")
        })
    }

    /// The value of the keyword `v` among `words`; another word:
    /// `'W' is not one of "A", "B"`.
    pub(super) fn keyword<T: Copy>(
        &mut self,
        v: &Spanned<String>,
        field: &str,
        words: &[(&str, T)],
    ) -> Option<T> {
        let word = v.get_ref().as_str();
        let value = words.iter().find(|(w, _)| *w == word).map(|&(_, t)| t);
        self.check(v, field, value, || {
            let list: Vec<String> = words.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            format!("'{word}' is not one of {}", list.join(", "))
        })
    }
}

/// The accepted range of a duration in seconds, written as its error shows it.
#[derive(Clone, Copy)]
pub(super) enum Seconds {
    /// `(LO, HI]`: above LO, at most HI.
    Above(f64, f64),
    /// `LO..=HI`.
    Within(f64, f64),
}

impl Seconds {
    fn contains(self, s: f64) -> bool {
        match self {
            Self::Above(lo, hi) => s > lo && s <= hi,
            Self::Within(lo, hi) => s >= lo && s <= hi,
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Above(lo, hi) => write!(f, "({lo}, {hi}]"),
            Self::Within(lo, hi) => write!(f, "{lo}..={hi}"),
        }
    }
}

/// Parses a TOML file (the config file or an included one) into its spec; a syntax or type
/// mistake becomes one error at its line, naming the key as well as the parser can tell.
pub(super) fn parse<T: DeserializeOwned>(
    text: &str,
    file: &Arc<str>,
    lines: &Lines,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| lines.line(s.start)).unwrap_or(1);
        ConfigError::new(
            Origin::new(file, line),
            super::field_of_toml_error(text, e.span()),
            e.message().trim().to_string(),
        )
    })
}
