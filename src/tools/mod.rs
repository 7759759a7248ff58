//! Operator tools, the top layer: client-side subcommands of the `gtmd` binary that ask
//! running servers questions or replay the server's own code offline.
//!
//! * [`probe`]: `gtmd probe`, one question asked as every line of a configuration would
//!   (an EDNS Client Subnet per line), a table of what each line gets.
//! * [`diff`]: `gtmd diff`, the migration check: every name of a configuration, every type
//!   it has, every line, asked of an old and a new server, answers compared as sets.
//! * [`explain`]: `gtmd explain`, which line, pool and addresses a client gets and why,
//!   from the configuration compiled by the server's compiler and answered by its
//!   `wire::respond` (health from a running server's control API when given).
//!
//! [`client`] is their DNS client (UDP with retries, TCP on truncation, `domain` for the
//! messages); [`lines`] works out the subnet that stands for each line.

pub mod cli;
pub mod client;
pub mod diff;
pub mod explain;
pub mod lines;
pub mod probe;
mod state;

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::tables::Snapshot;

/// Why a tool stopped (each is exit status 2; a difference found by `diff` is 1).
#[derive(Debug)]
pub enum Failure {
    /// The configuration does not load or compile (every error, one per line).
    Config(String),
    /// A server or the control API could not be asked.
    Network(String),
    /// The arguments do not fit together.
    Usage(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Network(e) => write!(f, "{e}"),
            Self::Usage(e) => write!(f, "{e}"),
        }
    }
}

/// Loads and compiles a configuration with the server's own code (`gtmd check`'s path);
/// `None`: the embedded default.
pub fn load(path: Option<&Path>) -> Result<(Config, Arc<Snapshot>), Failure> {
    let cfg = match path {
        Some(p) => Config::from_file(p),
        None => Config::embedded(),
    }
    .map_err(|e| Failure::Config(e.to_string()))?;
    let snap = crate::compile::compile(&cfg, 1).map_err(|e| Failure::Config(e.to_string()))?;
    Ok((cfg, Arc::new(snap)))
}
