//! `[dnstap]`: the query log, as dnstap messages in Frame Streams to a reader's Unix socket
//! or to a file, validated into a [`Dnstap`].

use std::path::PathBuf;

use toml::Spanned;

use super::spec::DnstapSpec;
use super::validate::Ctx;

/// Longest Unix socket path (`sun_path` holds 108 octets with the final NUL).
const SUN_PATH_MAX: usize = 107;

/// Where dnstap frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A Frame Streams reader listening on this Unix socket (`fstrm_capture -u`, a
    /// collector): the bidirectional handshake, reconnected when the reader goes away.
    Socket(PathBuf),
    /// A Frame Streams file, created (or truncated) at start-up and finished at shutdown.
    File(PathBuf),
}

/// `[dnstap]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnstap {
    /// Where the frames go.
    pub sink: Sink,
    /// One query in `sample` is logged (per shard thread).
    pub sample: u32,
    /// AUTH_QUERY messages.
    pub log_queries: bool,
    /// AUTH_RESPONSE messages.
    pub log_responses: bool,
    /// AUTH_RESPONSE messages carry the query as well (Knot's `responses-with-queries`).
    pub responses_with_queries: bool,
    /// The `identity` of every message (default: the host name; empty: none).
    pub identity: Vec<u8>,
    /// The `version` of every message (default: `gtmd VERSION`; empty: none).
    pub version: Vec<u8>,
}

impl DnstapSpec {
    /// The settings, or `None` with the mistakes reported.
    pub(super) fn validate<T>(&self, at: &Spanned<T>, ctx: &mut Ctx<'_>) -> Option<Dnstap> {
        let sink = self.sink(at, ctx);
        let sample = ctx.int(&self.sample, "dnstap.sample", 1..=1_000_000);
        let log_queries = self.log_queries.unwrap_or(true);
        let log_responses = self.log_responses.unwrap_or(true);
        if !log_queries && !log_responses {
            ctx.err(
                at,
                "dnstap",
                "log-queries and log-responses are both false: nothing to log (remove [dnstap] to turn it off)",
            );
            return None;
        }
        let text =
            |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().as_bytes().to_vec());
        Some(Dnstap {
            sink: sink?,
            sample: sample.unwrap_or(1),
            log_queries,
            log_responses,
            responses_with_queries: self.responses_with_queries.unwrap_or(false),
            identity: text(&self.identity).unwrap_or_else(hostname),
            version: text(&self.version)
                .unwrap_or_else(|| format!("gtmd {}", env!("CARGO_PKG_VERSION")).into_bytes()),
        })
    }

    /// `socket` or `file`, exactly one, a path that can be used.
    fn sink<T>(&self, at: &Spanned<T>, ctx: &mut Ctx<'_>) -> Option<Sink> {
        match (&self.socket, &self.file) {
            (Some(_), Some(f)) => {
                ctx.err(f, "dnstap.file", "give socket or file, not both");
                None
            }
            (None, None) => {
                ctx.err(
                    at,
                    "dnstap",
                    "no sink: set socket = \"/path\" (a Frame Streams reader) or file = \"/path\"",
                );
                None
            }
            (Some(s), None) => {
                let p = ctx.path(s.get_ref());
                let len = p.as_os_str().len();
                if s.get_ref().is_empty() || len > SUN_PATH_MAX {
                    ctx.err(
                        s,
                        "dnstap.socket",
                        format!(
                            "'{}' is {len} octets: a Unix socket path is 1..={SUN_PATH_MAX}",
                            p.display()
                        ),
                    );
                    return None;
                }
                Some(Sink::Socket(p))
            }
            (None, Some(f)) => {
                let p = ctx.path(f.get_ref());
                let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                if f.get_ref().is_empty() || p.is_dir() || dir.is_some_and(|d| !d.is_dir()) {
                    ctx.err(
                        f,
                        "dnstap.file",
                        format!("'{}' is not a file in an existing folder", p.display()),
                    );
                    return None;
                }
                Some(Sink::File(p))
            }
        }
    }
}

/// This host's name (Knot's default identity), empty when it cannot be read.
fn hostname() -> Vec<u8> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().as_bytes().to_vec())
        .unwrap_or_default()
}
