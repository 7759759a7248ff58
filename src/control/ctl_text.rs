//! How `gtmd ctl` shows the API's answers as text (`--json` prints them as they are).

use std::fmt::Write;

use serde_json::Value;

/// A JSON scalar as text (strings without quotes, null as `-`).
fn t(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(t).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Seconds as `1d2h3m4s` (largest units only as needed).
pub(super) fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, u) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 || !out.is_empty() {
            let _ = write!(out, "{n}{u}");
        }
    }
    let _ = write!(out, "{s}s");
    out
}

fn now_ms() -> u64 {
    super::ops::unix_ms()
}

/// `gtmd ctl status`.
pub(super) fn status(d: &Value) -> String {
    let mut s = format!(
        "gtmd {}, up {}\ngeneration   {}\nshards       {}\nconfig file  {}\n",
        t(&d["version"]),
        span(d["uptime_seconds"].as_u64().unwrap_or(0)),
        t(&d["generation"]),
        t(&d["shards"]),
        d["config_file"].as_str().unwrap_or("(embedded default)"),
    );
    fleet(&mut s, &d["fleet"]);
    let l = &d["last_reload"];
    if l.is_null() {
        s.push_str("last reload  none since start\n");
        return s;
    }
    let ago = now_ms().saturating_sub(l["unix_ms"].as_u64().unwrap_or(0)) / 1000;
    let _ = writeln!(
        s,
        "last reload  {} ({}), generation {}, {} ms, {} ago",
        if l["ok"] == true { "ok" } else { "REJECTED" },
        t(&l["trigger"]),
        t(&l["generation"]),
        t(&l["ms"]),
        span(ago)
    );
    for e in l["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "  {}", t(e));
    }
    s
}

/// An edge's line of `gtmd ctl status`, and its last refusal.
fn fleet(s: &mut String, f: &Value) {
    if !f.is_object() {
        return;
    }
    let sharing = if f["share_health"] == true {
        ", sharing health"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "fleet        edge {}, epoch {}, engine {}{sharing}",
        t(&f["edge"]),
        t(&f["epoch"]),
        t(&f["engine"])
    );
    let r = &f["refused"];
    if r.is_object() {
        let _ = writeln!(s, "  refused epoch {}:", t(&r["epoch"]));
        for e in r["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(s, "    {}", t(e));
        }
    }
}

/// `gtmd ctl stats`.
pub(super) fn stats(d: &Value) -> String {
    let nonzero = |o: &Value| -> String {
        let parts: Vec<String> = o
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join("  ")
        }
    };
    let mut s = format!(
        "queries    {} (udp {}, tcp {})\nrcode      {}\nqtype      {}\n",
        t(&d["queries"]),
        t(&d["udp"]),
        t(&d["tcp"]),
        nonzero(&d["rcode"]),
        nonzero(&d["qtype"]),
    );
    let _ = writeln!(
        s,
        "dropped    {}  truncated {}  rrl limited {} (slipped {})\ntcp        {} connections, {} refused",
        t(&d["dropped"]),
        t(&d["truncated"]),
        t(&d["rrl_limited"]),
        t(&d["rrl_slipped"]),
        t(&d["tcp_connections"]),
        t(&d["tcp_refused"]),
    );
    for sh in d["shards"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "shard {:<4} {} queries",
            t(&sh["shard"]),
            t(&sh["queries"])
        );
    }
    s
}

/// `gtmd ctl state [NAME]`: tables of addresses, pools and access domains (only the rows
/// of NAME when given; an error when nothing has that name).
pub(super) fn state(d: &Value, name: Option<&str>) -> Result<String, String> {
    let wanted = |v: &Value| {
        name.is_none_or(|n| {
            let have = v["name"].as_str().unwrap_or("");
            have == n
                || have
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(n.trim_end_matches('.'))
        })
    };
    let rows = |key: &str| -> Vec<&Value> {
        d[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| wanted(v))
            .collect()
    };
    let (addrs, pools, ads) = (rows("addresses"), rows("pools"), rows("access_domains"));
    if addrs.is_empty() && pools.is_empty() && ads.is_empty() && name.is_some() {
        return Err(format!(
            "gtmd ctl: no address, pool or access domain is called '{}'",
            name.unwrap_or("")
        ));
    }
    let mut s = String::new();
    if !addrs.is_empty() {
        let _ = writeln!(
            s,
            "{:<24} {:<28} {:<5} {:<5} {:<8} OVERRIDE",
            "ADDRESS", "VALUE", "UP", "MODE", "PROBE"
        );
        for a in addrs {
            let mut ov = t(&a["override"]);
            if let Some(until) = a["override_expires_unix_ms"].as_u64() {
                let left = until.saturating_sub(now_ms()).div_ceil(1000);
                let _ = write!(ov, " ({} left)", span(left));
            }
            let up = if a["up"] == true { "up" } else { "DOWN" };
            let _ = writeln!(
                s,
                "{:<24} {:<28} {:<5} {:<5} {:<8} {}",
                t(&a["name"]),
                t(&a["value"]),
                up,
                t(&a["mode"]),
                t(&a["probe"]),
                ov
            );
        }
    }
    if !pools.is_empty() {
        let _ = writeln!(s, "\n{:<24} {:<9} ADDRESSES", "POOL", "HEALTHY");
        for p in pools {
            let h = if p["healthy"] == true { "yes" } else { "NO" };
            let _ = writeln!(s, "{:<24} {:<9} {}", t(&p["name"]), h, t(&p["addresses"]));
        }
    }
    if !ads.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<32} {:<6} {:<9} {:<40} LINES -> ACTIVE POOL",
            "ACCESS DOMAIN", "TYPE", "ENABLED", "POLICY"
        );
        for ad in ads {
            let routes: Vec<String> = ad["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let active = if r["fallback"] == true {
                        "(fallback)".into()
                    } else {
                        t(&r["active"])
                    };
                    format!("{} -> {active}", t(&r["lines"]))
                })
                .collect();
            let _ = writeln!(
                s,
                "{:<32} {:<6} {:<9} {:<40} {}",
                t(&ad["name"]),
                t(&ad["type"]),
                t(&ad["enabled"]),
                t(&ad["policy"]),
                routes.join("; ")
            );
        }
    }
    Ok(s.trim_start_matches('\n').to_string())
}

/// `gtmd ctl override`.
pub(super) fn overridden(address: &str, mode: &str, duration: Option<&str>, d: &Value) -> String {
    let mut s = match duration {
        Some(f) => format!("{address}: {mode} for {f}, then back to its configured mode\n"),
        None => format!("{address}: {mode} until changed\n"),
    };
    for c in d["changes"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "  {}", t(c));
    }
    s
}

/// `gtmd ctl enable|disable`.
pub(super) fn switched(d: &Value) -> String {
    let mut s = String::new();
    for o in d["objects"].as_array().into_iter().flatten() {
        let state = if o["enabled"] == false {
            "disabled"
        } else {
            "enabled"
        };
        let _ = writeln!(s, "{} {}: {state}", t(&o["name"]), t(&o["type"]));
    }
    let _ = writeln!(
        s,
        "generation {} serving ({} written)",
        t(&d["generation"]),
        t(&d["file"])
    );
    s
}

/// `gtmd ctl cluster`: the members table, then the checks' votes and probers.
pub(super) fn cluster(d: &Value) -> String {
    let mut s = String::new();
    let yes = |v: &Value| if *v == true { "yes" } else { "no" };
    let _ = writeln!(
        s,
        "edge {} (group {}), {}, probes {} of {} checks, {} per group, min-vantages {}, {} holding{}",
        t(&d["edge"]),
        t(&d["group"]),
        if d["joined"] == true { "joined" } else { "on its own (probes every check)" },
        t(&d["probed"]),
        t(&d["checks"]),
        t(&d["probes_per_group"]),
        t(&d["min_vantages"]),
        t(&d["holding"]),
        if d["isolated"] == true { ", ISOLATED" } else { "" },
    );
    let mut rows = vec![[
        "EDGE", "GROUP", "BOOT", "UP", "EPOCH", "APPLY", "ISOLATED", "HEARD", "STATE",
    ]
    .map(String::from)
    .to_vec()];
    for m in d["members"].as_array().into_iter().flatten() {
        let boot = m["boot"]
            .as_u64()
            .map_or("-".into(), |b| format!("{:08x}", b >> 32));
        rows.push(vec![
            t(&m["edge"]),
            t(&m["group"]),
            boot,
            duration_ms(m["up_ms"].as_u64().unwrap_or(0)),
            t(&m["epoch"]),
            t(&m["apply"]),
            yes(&m["isolated"]).into(),
            format!("{} ago", duration_ms(m["age_ms"].as_u64().unwrap_or(0))),
            if m["live"] == true { "live" } else { "stale" }.into(),
        ]);
    }
    table(&mut s, &rows);
    let votes = d["votes"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(s, "\nchecks with fresh votes: {}", votes.len());
    let mut rows = vec![["ADDRESS", "CHECK", "UP", "DOWN", "PROBERS"]
        .map(String::from)
        .to_vec()];
    for v in &votes {
        let probers: Vec<String> = v["probers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(t)
            .collect();
        rows.push(vec![
            t(&v["address"]),
            t(&v["check"]),
            t(&v["up"]),
            t(&v["down"]),
            probers.join(","),
        ]);
    }
    table(&mut s, &rows);
    s
}

/// `ms` as `1.2 s`, `3m 4s` or `2h 5m`.
fn duration_ms(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{}h {}m", secs / 3600, secs % 3600 / 60)
    }
}

/// Rows as columns padded to their widest cell.
fn table(s: &mut String, rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let width: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, x)| format!("{x:<w$}", w = width[c]))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(61), "1m1s");
        assert_eq!(span(3600), "1h0m0s");
        assert_eq!(span(90_061), "1d1h1m1s");
    }
}
