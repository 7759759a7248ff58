//! The two text formats a scrape may ask for: Prometheus' classic text exposition format
//! (0.0.4) and OpenMetrics 1.0 (`Accept: application/openmetrics-text`). They differ in how
//! a counter family is named (`x_total` in the classic format, `x` in OpenMetrics, whose
//! samples keep `_total`), in the info type (a gauge in the classic format) and in the
//! closing `# EOF`.

use std::fmt::{Display, Write};

/// Content type of the classic text format.
pub(super) const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics.
pub(super) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// A constant 1 whose labels carry the information (`_info`).
    Info,
}

/// An exposition being written.
pub(super) struct Expo {
    openmetrics: bool,
    out: String,
}

impl Expo {
    /// A classic text exposition, or OpenMetrics.
    pub(super) fn new(openmetrics: bool) -> Self {
        Self {
            openmetrics,
            out: String::with_capacity(16 * 1024),
        }
    }

    /// Starts family `name` (without `_total` or `_info`): its HELP and TYPE lines.
    pub(super) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (suffix, ty) = match (kind, self.openmetrics) {
            (Kind::Counter, false) => ("_total", "counter"),
            (Kind::Counter, true) => ("", "counter"),
            (Kind::Gauge, _) => ("", "gauge"),
            (Kind::Histogram, _) => ("", "histogram"),
            (Kind::Info, false) => ("_info", "gauge"),
            (Kind::Info, true) => ("", "info"),
        };
        let _ = writeln!(self.out, "# HELP {name}{suffix} {help}");
        let _ = writeln!(self.out, "# TYPE {name}{suffix} {ty}");
    }

    /// One sample of family `name`: `name` + `suffix` (`_total`, `_bucket`, `_info`, ...),
    /// its labels (values escaped) and value.
    pub(super) fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The finished text.
    pub(super) fn finish(mut self) -> String {
        if self.openmetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A label value as both formats quote it: `\`, `"` and newline escaped.
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as both formats write it (Rust's `Display` never uses an exponent, and the
/// values here are finite).
pub(super) fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v > 0.0 {
        "+Inf".into()
    } else if v < 0.0 {
        "-Inf".into()
    } else {
        "NaN".into()
    }
}

/// Whether an `Accept` header asks for OpenMetrics.
pub(super) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !part
                    .split(';')
                    .any(|p| p.trim().replace(' ', "").eq_ignore_ascii_case("q=0"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        for om in [false, true] {
            let mut e = Expo::new(om);
            e.family("gtmd_x", Kind::Counter, "Xs.");
            e.sample("gtmd_x", "_total", &[("a", "q\"\\\nz"), ("b", "")], 3);
            e.family("gtmd_build", Kind::Info, "Build.");
            e.sample("gtmd_build", "_info", &[("version", "1")], 1);
            let text = e.finish();
            let want = if om {
                "# HELP gtmd_x Xs.\n# TYPE gtmd_x counter\n\
                 gtmd_x_total{a=\"q\\\"\\\\\\nz\",b=\"\"} 3\n\
                 # HELP gtmd_build Build.\n# TYPE gtmd_build info\n\
                 gtmd_build_info{version=\"1\"} 1\n# EOF\n"
            } else {
                "# HELP gtmd_x_total Xs.\n# TYPE gtmd_x_total counter\n\
                 gtmd_x_total{a=\"q\\\"\\\\\\nz\",b=\"\"} 3\n\
                 # HELP gtmd_build_info Build.\n# TYPE gtmd_build_info gauge\n\
                 gtmd_build_info{version=\"1\"} 1\n"
            };
            assert_eq!(text, want);
        }
    }

    #[test]
    fn accept_headers() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_openmetrics(Some("Application/OpenMetrics-Text")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text; q=0"
        )));
        assert!(!wants_openmetrics(None));
        assert_eq!(float(0.25), "0.25");
        assert_eq!(float(10.0), "10");
        assert_eq!(float(f64::INFINITY), "+Inf");
    }
}
