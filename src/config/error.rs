//! Control-path errors with the context a person needs to act: file, line, field, reason.

use std::fmt;
use std::sync::Arc;

/// Where in the configuration something came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file (config file or zone file) as given.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: u32,
}

impl Origin {
    /// An origin in `file` at `line`.
    pub fn new(file: &Arc<str>, line: u32) -> Self {
        Self {
            file: file.clone(),
            line,
        }
    }
}

/// One configuration mistake, printed as `file:line: field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where it is.
    pub at: Origin,
    /// The dotted field path, e.g. `zone[0].soa.mname` or `record`.
    pub field: String,
    /// What is wrong and, where possible, what is expected.
    pub reason: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(at: Origin, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            at,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.at.file, self.at.line, self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one configuration; `check` prints them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Maps byte offsets in a text to 1-based line numbers.
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(text: &str) -> Self {
        let mut lines = Self { starts: Vec::new() };
        lines.reset(text);
        lines
    }

    /// The line starts of `text` instead, in the same allocation where it fits.
    pub(crate) fn reset(&mut self, text: &str) {
        self.starts.clear();
        self.starts.push(0);
        self.starts
            .extend(text.match_indices('\n').map(|(i, _)| i + 1));
    }

    pub(crate) fn line(&self, offset: usize) -> u32 {
        match self.starts.binary_search(&offset) {
            Ok(i) => i as u32 + 1,
            Err(i) => i as u32,
        }
    }
}
