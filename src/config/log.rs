//! `[log]`: how the process's own log lines look (text or JSON) and the least severe level
//! written, validated into a [`Log`]. `RUST_LOG`, when set, overrides the level.

use super::spec::LogSpec;
use super::validate::Ctx;
use super::{Log, LogFormat};

/// The levels `level` accepts, most severe first (`tracing`'s names).
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl LogSpec {
    /// The settings; a mistake is reported and the default kept.
    pub(super) fn validate(&self, ctx: &mut Ctx<'_>) -> Log {
        let mut log = Log::default();
        if let Some(f) = &self.format {
            let words = [("text", LogFormat::Text), ("json", LogFormat::Json)];
            if let Some(f) = ctx.keyword(f, "log.format", &words) {
                log.format = f;
            }
        }
        if let Some(l) = &self.level {
            let words = LEVELS.map(|w| (w, w));
            if let Some(l) = ctx.keyword(l, "log.level", &words) {
                log.level = l;
            }
        }
        log
    }
}
