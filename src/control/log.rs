//! The process's own log lines (stderr): set up before anything else runs ([`init`]), then
//! given the configuration's `[log]` as soon as it is read, and again at every reload
//! ([`apply`]). Until then lines are text at level `info` (nothing is logged before the
//! configuration is read but a failure to read it, which is printed, not logged).
//!
//! - **text**: `TIME LEVEL TARGET: message key=value ...`; a value that is empty or holds
//!   spaces, quotes, `=`, backslashes or control characters is written quoted with Rust's
//!   escapes (`file="/etc/my gtmd/x.toml"`), and string fields always are
//!   (`io="mmsg"`), so a line splits unambiguously into fields.
//! - **json**: one object per line (`tracing-subscriber`'s JSON format, fields flattened
//!   beside `timestamp`, `level`, `target` and `message`).
//! - **under systemd** (`JOURNAL_STREAM` names the device and inode stderr is): each line
//!   starts with its sd-daemon priority (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug
//!   and trace; sd-daemon(3)) and has no time stamp (the journal adds its own).
//!
//! The level comes from `RUST_LOG` when it is set (any `EnvFilter` directive), else from
//! `log.level`.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Full, Json, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{Log, LogFormat};

/// Lines are JSON objects (`log.format = "json"`).
static JSON: AtomicBool = AtomicBool::new(false);
/// The level filter, replaced when `[log]` is applied (unless `RUST_LOG` is set).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// What [`apply`] last applied.
static APPLIED: std::sync::Mutex<Option<Log>> = std::sync::Mutex::new(None);

/// Installs the process's logger: text, level `RUST_LOG` or `info`, sd-daemon priorities
/// when stderr is the journal. Call once, first.
pub fn init() {
    let journal = stderr_is_journal();
    let env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = env
        .as_deref()
        .and_then(|e| EnvFilter::try_new(e).ok().map(|f| quiet_engine(f, e)))
        .unwrap_or_else(|| quiet_engine(EnvFilter::new("info"), ""));
    let (filter, handle) = reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(Fields)
        .event_format(Lines::new(journal));
    if tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// `f`, with the NATS client's own lines (a connection attempt each) at `warn` unless
/// `spec` names its target: the fleet thread logs the engine link once per change.
fn quiet_engine(f: EnvFilter, spec: &str) -> EnvFilter {
    if spec.contains("async_nats") {
        return f;
    }
    match "async_nats=warn".parse() {
        Ok(d) => f.add_directive(d),
        Err(_) => f,
    }
}

/// Applies a configuration's `[log]`: the format at once, the level unless `RUST_LOG` is
/// set. A reload that changes it says so (in the format it leaves).
pub fn apply(log: &Log) {
    let before = APPLIED.lock().map(|mut a| a.replace(*log)).ok().flatten();
    let env = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
    if before.is_some_and(|b| b != *log) {
        let format = match log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        tracing::info!(
            format,
            level = log.level,
            rust_log = env,
            "reload: [log] applied"
        );
    }
    JSON.store(log.format == LogFormat::Json, Relaxed);
    if !env {
        if let Some(h) = FILTER.get() {
            if let Err(e) = h.reload(quiet_engine(EnvFilter::new(log.level), "")) {
                tracing::warn!("cannot apply log.level: {e}");
            }
        }
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` (set by systemd for a
/// service whose output goes to the journal) is `DEVICE:INODE` of stderr itself, not of
/// something a child inherited it for.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The sd-daemon(3) priority of a level.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Formats an event as text or JSON ([`JSON`]), with or without time stamps, with the
/// sd-daemon priority first when writing to the journal.
struct Lines {
    journal: bool,
    text: Format<Full>,
    text_bare: Format<Full, ()>,
    json: Format<Json>,
    json_bare: Format<Json, ()>,
}

impl Lines {
    fn new(journal: bool) -> Self {
        let json = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        Self {
            journal,
            text: tracing_subscriber::fmt::format(),
            text_bare: tracing_subscriber::fmt::format().without_time(),
            json_bare: json.clone().without_time(),
            json,
        }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let json = JSON.load(Relaxed);
        if self.journal {
            write!(w, "<{}>", priority(*event.metadata().level()))?;
            if json {
                self.json_bare.format_event(ctx, w, event)
            } else {
                self.text_bare.format_event(ctx, w, event)
            }
        } else if json {
            self.json.format_event(ctx, w, event)
        } else {
            self.text.format_event(ctx, w, event)
        }
    }
}

/// Writes an event's fields as `message key=value ...` with unambiguous values (the
/// module's header says which are quoted).
struct Fields;

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = FieldWriter {
            w: writer,
            first: true,
            scratch: String::new(),
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct FieldWriter<'w> {
    w: Writer<'w>,
    first: bool,
    scratch: String,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// Writes `name=value` (the message bare, without its name).
    fn put(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.w, "{sep}{value}")
        } else {
            write!(self.w, "{sep}{}={value}", field.name())
        };
    }
}

/// Whether a field value must be quoted to read back as one value.
fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'))
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.put(field, value);
        } else {
            self.put(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        let _ = write!(s, "{value:?}");
        if field.name() != "message" && needs_quotes(&s) {
            self.put(field, &format!("{s:?}"));
        } else {
            self.put(field, &s);
        }
        self.scratch = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        for (v, q) in [
            ("127.0.0.1:53", false),
            ("mmsg", false),
            ("", true),
            ("a b", true),
            ("x=y", true),
            ("say \"hi\"", true),
            ("tab\there", true),
            ("back\\slash", true),
            ("[\"a\", \"b\"]", true),
        ] {
            assert_eq!(needs_quotes(v), q, "{v:?}");
        }
        assert_eq!(
            [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE
            ]
            .map(priority),
            [3, 4, 6, 7, 7]
        );
    }
}
