//! `[alerts]`: the webhook that receives every state change, validated into [`Alerts`].

use std::time::Duration;

use super::spec::AlertsSpec;
use super::validate::{Ctx, Seconds};
use super::Alerts;

impl AlertsSpec {
    /// The webhook, or `None` when its URL is unusable (reported).
    pub(super) fn validate(&self, ctx: &mut Ctx<'_>) -> Option<Alerts> {
        let url = self.webhook.get_ref();
        let Some(rest) = url.strip_prefix("http://") else {
            ctx.err(
                &self.webhook,
                "alerts.webhook",
                format!("'{url}' is not an http:// URL (https webhooks are not supported yet)"),
            );
            return None;
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let retries = ctx.int(&self.retries, "alerts.retries", 0..=100);
        let ok = Seconds::Above(0.0, 60.0);
        let timeout = ctx.seconds(&self.timeout, "alerts.timeout", ok, "");
        Some(Alerts {
            addr,
            path: path.to_string(),
            url: url.clone(),
            retries: retries.unwrap_or(3),
            timeout: timeout.unwrap_or(Duration::from_secs(2)),
        })
    }
}
