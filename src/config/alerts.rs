//! `[alerts]`: the webhooks that receive state changes, validated into [`Alerts`]: a
//! catch-all `webhook` and `[[alerts.rule]]`s, each sending the events it selects (by kind,
//! access domain and pool) to its own webhook; http:// or https:// (verified against the
//! system's roots and `ca-file`).

use std::collections::HashSet;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use toml::Spanned;

use super::gslb::{ad_key, Fallback, Gslb};
use super::name::display_name;
use super::spec::{AlertRuleSpec, AlertsSpec};
use super::validate::{Ctx, Seconds};
use super::{AlertRule, Alerts, Webhook, ALERT_EVENTS};

/// `[alerts]` validated against the GSLB model its rules name; `None` when it is unusable
/// (reported).
pub(super) fn validate(
    spec: &Spanned<AlertsSpec>,
    ctx: &mut Ctx<'_>,
    gslb: &Gslb,
) -> Option<Alerts> {
    let a = spec.get_ref();
    if a.webhook.is_none() && a.rule.is_empty() {
        ctx.err(
            spec,
            "alerts",
            "no webhook: give `webhook` (every event) or [[alerts.rule]] tables",
        );
        return None;
    }
    let webhook = a
        .webhook
        .as_ref()
        .and_then(|w| webhook(w, "alerts.webhook", ctx));
    let rules: Vec<Option<AlertRule>> = a
        .rule
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, i, ctx, gslb))
        .collect();
    let retries = ctx.int(&a.retries, "alerts.retries", 0..=100);
    let ok = Seconds::Above(0.0, 60.0);
    let timeout = ctx.seconds(&a.timeout, "alerts.timeout", ok, "");
    let (ca_pem, extra) = a.ca_file.as_ref().map_or((None, Vec::new()), |f| {
        ca_file(f, ctx).map_or((None, Vec::new()), |(p, c)| (Some(p), c))
    });
    let rules: Vec<AlertRule> = rules.into_iter().flatten().collect();
    let any_tls = webhook
        .iter()
        .chain(rules.iter().map(|r| &r.webhook))
        .any(|w| w.tls);
    let tls = if any_tls {
        match super::tls::client_config(&extra) {
            Ok(c) => Some(c),
            Err(e) => {
                let at = a
                    .ca_file
                    .as_ref()
                    .map_or_else(|| ctx.at(spec), |f| ctx.at(f));
                ctx.push(at, "alerts.ca-file", e);
                None
            }
        }
    } else {
        None
    };
    Some(Alerts {
        webhook,
        rules,
        retries: retries.unwrap_or(3),
        timeout: timeout.unwrap_or(Duration::from_secs(2)),
        ca_pem,
        tls,
    })
}

/// An http:// or https:// URL taken apart; `None` (reported) when it is neither.
fn webhook(url: &Spanned<String>, field: &str, ctx: &mut Ctx<'_>) -> Option<Webhook> {
    let text = url.get_ref();
    let (tls, rest, port) = if let Some(r) = text.strip_prefix("https://") {
        (true, r, 443)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r, 80)
    } else {
        ctx.err(
            url,
            field,
            format!("'{text}' is not an http:// or https:// URL"),
        );
        return None;
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, addr) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => {
            let Ok(_) = p.parse::<u16>() else {
                ctx.err(url, field, format!("'{text}': port '{p}' is not a number"));
                return None;
            };
            (h, hostport.to_string())
        }
        _ => (hostport, format!("{hostport}:{port}")),
    };
    if host.is_empty() {
        ctx.err(url, field, format!("'{text}' has no host"));
        return None;
    }
    Some(Webhook {
        url: text.clone(),
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        addr,
        path: path.to_string(),
    })
}

/// `ca-file`: its PEM text and certificates; `None` (reported) when unreadable or empty.
fn ca_file(
    f: &Spanned<String>,
    ctx: &mut Ctx<'_>,
) -> Option<(Vec<u8>, Vec<CertificateDer<'static>>)> {
    let path = ctx.path(f.get_ref());
    super::reads::note(&path);
    let pem = match std::fs::read(&path) {
        Ok(p) => p,
        Err(e) => {
            ctx.err(
                f,
                "alerts.ca-file",
                format!("cannot read {}: {e}", path.display()),
            );
            return None;
        }
    };
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(c) if !c.is_empty() => Some((pem, c)),
        Ok(_) => {
            let why = format!("{} holds no PEM CERTIFICATE", path.display());
            ctx.err(f, "alerts.ca-file", why);
            None
        }
        Err(e) => {
            ctx.err(f, "alerts.ca-file", format!("{}: {e}", path.display()));
            None
        }
    }
}

/// One `[[alerts.rule]]`, its names resolved against the model.
fn rule(r: &AlertRuleSpec, i: usize, ctx: &mut Ctx<'_>, gslb: &Gslb) -> Option<AlertRule> {
    let webhook = webhook(&r.webhook, "alerts.rule.webhook", ctx);
    let mut events = 0u8;
    for e in r.events.iter().flatten() {
        match ALERT_EVENTS.iter().position(|k| k == e.get_ref()) {
            Some(b) => events |= 1 << b,
            None => ctx.err(
                e,
                "alerts.rule.events",
                format!(
                    "'{}' is not an event: {}",
                    e.get_ref(),
                    ALERT_EVENTS.join(", ")
                ),
            ),
        }
    }
    if r.events.is_none() {
        events = (1 << ALERT_EVENTS.len()) - 1;
    }
    let mut rule = AlertRule {
        name: r
            .name
            .as_ref()
            .map_or_else(|| format!("rule-{}", i + 1), |n| n.get_ref().clone()),
        webhook: webhook?,
        events,
        filtered: r.access_domains.is_some() || r.pools.is_some(),
        access_domains: HashSet::new(),
        pools: HashSet::new(),
        covered_pools: HashSet::new(),
        covered_addresses: HashSet::new(),
    };
    for p in r.pools.iter().flatten() {
        if gslb.pools.iter().any(|q| &q.name == p.get_ref()) {
            rule.pools.insert(p.get_ref().clone());
            rule.covered_pools.insert(p.get_ref().clone());
        } else {
            let why = format!("no pool named '{}'", p.get_ref());
            ctx.err(p, "alerts.rule.pools", why);
        }
    }
    for a in r.access_domains.iter().flatten() {
        access_domain(a, gslb, &mut rule, ctx);
    }
    for p in &gslb.pools {
        if rule.covered_pools.contains(&p.name) {
            let members = p.addresses.iter().map(|&a| gslb.addresses[a].name.clone());
            rule.covered_addresses.extend(members);
        }
    }
    Some(rule)
}

/// Adds the access domains `a` names (`name.` for every type, `name. TYPE` for one) and
/// their pools to `rule`; an unknown name is reported.
fn access_domain(a: &Spanned<String>, gslb: &Gslb, rule: &mut AlertRule, ctx: &mut Ctx<'_>) {
    let want = a.get_ref().trim();
    let (name, rtype) = match want.split_once(' ') {
        Some((n, t)) => (n, Some(t.trim().to_ascii_uppercase())),
        None => (want, None),
    };
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    let mut found = false;
    for ad in &gslb.access_domains {
        let key = ad_key(ad);
        let same_name = display_name(&ad.name).eq_ignore_ascii_case(&name);
        let same_type = rtype
            .as_deref()
            .is_none_or(|t| key.rsplit(' ').next() == Some(t));
        if !(same_name && same_type) {
            continue;
        }
        found = true;
        rule.access_domains.insert(key);
        let pools = ad.pools.iter().map(|&(p, _)| p as usize);
        let line_pools = ad
            .lines
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|&p| p as usize));
        let fallback = match ad.fallback {
            Fallback::Pool(p) => Some(p),
            _ => None,
        };
        for p in pools.chain(line_pools).chain(fallback) {
            rule.covered_pools.insert(gslb.pools[p].name.clone());
        }
    }
    if !found {
        ctx.err(
            a,
            "alerts.rule.access-domains",
            format!("no access domain named '{want}' (\"www.example.test.\" or \"www.example.test. AAAA\")"),
        );
    }
}
