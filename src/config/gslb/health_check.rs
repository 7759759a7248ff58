//! `[[health-check]]`: templates of the checks addresses name (protocol, port, timing,
//! anti-flap thresholds, HTTP expectations, ping limits, vantage points), validated into
//! [`HealthCheck`]s.

use std::time::Duration;

use toml::Spanned;

use super::{Ctx, HealthCheck, Protocol};
use crate::config::spec::HealthCheckSpec;
use crate::config::validate::Seconds;

impl HealthCheckSpec {
    pub(super) fn validate(&self, ctx: &mut Ctx<'_>) -> HealthCheck {
        let protocols = [
            ("ping", Protocol::Ping),
            ("tcp", Protocol::Tcp),
            ("http", Protocol::Http),
            ("https", Protocol::Https),
        ];
        let protocol = ctx
            .keyword(&self.protocol, "health-check.protocol", &protocols)
            .unwrap_or(Protocol::Tcp);
        let port = self.port(ctx, protocol);
        let (interval, timeout) = self.timing(ctx);
        let mut count = |v: &Option<Spanned<i64>>, field: &str, default: u32| {
            ctx.int(v, field, 1..=100).unwrap_or(default)
        };
        let down_after = count(&self.down_after, "health-check.down-after", 3);
        let up_after = count(&self.up_after, "health-check.up-after", 2);
        let packets = count(&self.packets, "health-check.packets", 3);
        let expect = self.expect(ctx);
        let (max_loss, max_rtt) = self.ping_limits(ctx);
        let (sources, failure_rate) = self.vantage_points(ctx);
        let half_open = self.half_open.unwrap_or(false);
        if half_open && protocol != Protocol::Tcp {
            let why = "half-open applies to tcp checks only";
            ctx.err(&self.protocol, "health-check.half-open", why);
        }
        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
        HealthCheck {
            half_open,
            sources,
            failure_rate,
            name: self.name.get_ref().clone(),
            protocol,
            port,
            interval,
            timeout,
            down_after,
            up_after,
            method: text(&self.method).unwrap_or_else(|| "GET".into()),
            path: text(&self.path).unwrap_or_else(|| "/".into()),
            host: text(&self.host),
            expect,
            body_contains: text(&self.body_contains),
            tls_verify: self.tls_verify.unwrap_or(true),
            sni: text(&self.sni),
            packets,
            max_loss,
            max_rtt,
            at: ctx.at(&self.name),
        }
    }

    /// `port`: given, or the protocol's (HTTP 80, HTTPS 443); a tcp check needs one.
    fn port(&self, ctx: &mut Ctx<'_>, protocol: Protocol) -> u16 {
        if self.port.is_some() {
            return ctx
                .int(&self.port, "health-check.port", 1..=65535)
                .unwrap_or(0);
        }
        match protocol {
            Protocol::Http => 80,
            Protocol::Https => 443,
            Protocol::Ping => 0,
            Protocol::Tcp => {
                ctx.err(&self.name, "health-check.port", "a tcp check needs a port");
                0
            }
        }
    }

    /// `interval` (default 60 s) and `timeout` (default 5 s, at most the interval).
    fn timing(&self, ctx: &mut Ctx<'_>) -> (Duration, Duration) {
        let ok = Seconds::Within(1.0, 3600.0);
        let interval = ctx
            .seconds(&self.interval, "health-check.interval", ok, "")
            .unwrap_or(Duration::from_secs_f64(60.0));
        let ok = Seconds::Within(0.01, 3600.0);
        let timeout = ctx
            .seconds(&self.timeout, "health-check.timeout", ok, "")
            .unwrap_or(Duration::from_secs_f64(5.0f64.min(interval.as_secs_f64())));
        if timeout > interval {
            if let Some(t) = &self.timeout {
                ctx.err(t, "health-check.timeout", "longer than the interval");
            }
        }
        (interval, timeout)
    }

    /// `expect`: HTTP status codes (default 200).
    fn expect(&self, ctx: &mut Ctx<'_>) -> Vec<u16> {
        let mut expect = Vec::new();
        if let Some(e) = &self.expect {
            for &code in e.get_ref() {
                if (100..=599).contains(&code) {
                    expect.push(code as u16);
                } else {
                    let why = format!("{code} is not an HTTP status code");
                    ctx.err(e, "health-check.expect", why);
                }
            }
        }
        if expect.is_empty() {
            expect = vec![200];
        }
        expect
    }

    /// Ping: `max-loss` (a percentage, default 100) and `max-rtt` (milliseconds, default
    /// 5 s).
    fn ping_limits(&self, ctx: &mut Ctx<'_>) -> (f64, Duration) {
        let max_loss = self.max_loss.as_ref().and_then(|x| {
            let value = Some(*x.get_ref()).filter(|v| (0.0..=100.0).contains(v));
            ctx.check(x, "health-check.max-loss", value, || {
                "a percentage in 0..=100".into()
            })
        });
        let max_rtt = self.max_rtt.as_ref().and_then(|x| {
            let ms = *x.get_ref();
            let value = (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
            ctx.check(x, "health-check.max-rtt", value, || {
                "milliseconds above 0".into()
            })
        });
        (
            max_loss.unwrap_or(100.0),
            max_rtt.unwrap_or(Duration::from_secs(5)),
        )
    }

    /// `sources` (each once) and `failure-rate`, the percentage of them failing at which
    /// the address is down (default 50).
    fn vantage_points(&self, ctx: &mut Ctx<'_>) -> (Vec<std::net::IpAddr>, u32) {
        let mut sources = Vec::new();
        for src in self.sources.iter().flat_map(|l| l.get_ref()) {
            match src.get_ref().parse::<std::net::IpAddr>() {
                Ok(a) if !sources.contains(&a) => sources.push(a),
                Ok(a) => ctx.err(src, "health-check.sources", format!("{a} is listed twice")),
                Err(_) => ctx.err(
                    src,
                    "health-check.sources",
                    format!("'{}' is not an IP address", src.get_ref()),
                ),
            }
        }
        let failure_rate = self.failure_rate.as_ref().and_then(|r| {
            let n = *r.get_ref();
            let value = (1..=100).contains(&n).then_some(n as u32);
            ctx.check(r, "health-check.failure-rate", value, || {
                format!("{n}% is outside 1..=100")
            })
        });
        (sources, failure_rate.unwrap_or(50))
    }
}
