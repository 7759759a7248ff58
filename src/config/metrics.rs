//! `[metrics]`: what the control API's `GET /metrics` exposes beyond the fixed metrics,
//! validated into [`Metrics`].

use super::spec::MetricsSpec;
use super::validate::Ctx;
use super::Metrics;

/// Default of `max-series`.
pub const DEFAULT_MAX_SERIES: usize = 1000;

impl MetricsSpec {
    /// The settings; an out-of-range `max-series` is reported and the default used.
    pub(super) fn validate(&self, ctx: &mut Ctx<'_>) -> Metrics {
        let max_series = ctx.int_noted(
            &self.max_series,
            "metrics.max-series",
            0..=100_000,
            " (series per label: access domains, lines, routes)",
        );
        Metrics {
            per_domain: self.per_domain.unwrap_or(false),
            max_series: max_series.unwrap_or(DEFAULT_MAX_SERIES),
        }
    }
}
