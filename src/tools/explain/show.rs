//! An explanation as text, and what changes between two (the `--compare` what-if).

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{Explanation, Step};

/// One thing that changes from the old configuration to the new.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Change {
    /// What (`line`, `answer`, `app.example.test. A: pool`).
    pub what: String,
    /// Under the old configuration.
    pub old: String,
    /// Under the new one.
    pub new: String,
}

/// The explanation, a section per step.
pub(super) fn text(e: &Explanation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} (configuration {})", e.question, e.config);
    let _ = writeln!(s, "asker      {}, from {}", e.asker.address, e.asker.from);
    let _ = writeln!(s, "line       {}", line(e));
    let _ = writeln!(s, "health     {}", e.health);
    for st in &e.steps {
        step(&mut s, st);
    }
    for n in &e.notes {
        let _ = writeln!(s, "note       {n}");
    }
    let scope = e
        .reply
        .scope
        .map_or("no ECS option".into(), |x| format!("ECS scope {x}"));
    let _ = writeln!(s, "answer     {}, {scope}", e.reply.rcode);
    for rr in &e.reply.answer {
        let _ = writeln!(s, "  {} {} IN {} {}", rr.name, rr.ttl, rr.rtype, rr.data);
    }
    if e.steps.iter().any(|s| s.varies) {
        let _ = writeln!(
            s,
            "  (one draw: another query may get any of the possible addresses above)"
        );
    }
    s
}

fn line(e: &Explanation) -> String {
    let l = &e.line;
    let by = match (&l.prefix, &l.declared) {
        (Some(p), Some(d)) => format!(" by prefix {p} (line declared at {d})"),
        (None, Some(d)) => format!(" (line declared at {d})"),
        _ => ": no line prefix holds the address".into(),
    };
    let scope = if e.asker.ecs {
        format!("; the decision covers /{}", l.scope)
    } else {
        String::new()
    };
    format!("{}{by}{scope}", l.name)
}

fn step(s: &mut String, st: &Step) {
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "access domain {} (policy {}, TTL {})",
        st.access_domain, st.policy, st.ttl
    );
    let _ = writeln!(s, "  route      lines [{}]: {}", st.route, st.route_why);
    let _ = writeln!(s, "  candidates");
    for (i, p) in st.candidates.iter().enumerate() {
        let _ = writeln!(
            s,
            "    {}. {} (weight {}): {}; {}; {}",
            i + 1,
            p.name,
            p.weight,
            if p.healthy { "healthy" } else { "unhealthy" },
            p.condition,
            p.policy
        );
        for a in &p.addresses {
            let _ = writeln!(
                s,
                "         {} {} weight {}: {} ({})",
                a.name,
                a.value,
                a.weight,
                if a.up { "up" } else { "down" },
                a.why
            );
        }
    }
    let pool = st.pool.as_deref().unwrap_or("-");
    let _ = writeln!(s, "  pool       {pool}: {}", st.pool_why);
    let _ = writeln!(s, "  addresses  {}", st.addresses_why);
    let _ = writeln!(
        s,
        "  possible   {} ({})",
        if st.possible.is_empty() {
            "none".into()
        } else {
            st.possible.join(", ")
        },
        if st.varies {
            "varies per query"
        } else {
            "every query"
        }
    );
    let scope = match st.scope {
        Some(0) => "0: the answer does not depend on the asker".to_string(),
        Some(x) => format!("{x}: the prefix that decided the line"),
        None => "none (no ECS in the query)".into(),
    };
    let _ = writeln!(s, "  ECS scope  {scope}");
}

/// What differs between the old and the new explanation.
pub(super) fn changes(old: &Explanation, new: &Explanation) -> Vec<Change> {
    let mut out = Vec::new();
    let mut diff = |what: &str, o: String, n: String| {
        if o != n {
            out.push(Change {
                what: what.to_string(),
                old: o,
                new: n,
            });
        }
    };
    let line = |e: &Explanation| {
        format!(
            "{} ({})",
            e.line.name,
            e.line.prefix.as_deref().unwrap_or("no prefix")
        )
    };
    diff("line", line(old), line(new));
    let keys: BTreeSet<&str> = old
        .steps
        .iter()
        .chain(&new.steps)
        .map(|s| s.access_domain.as_str())
        .collect();
    for k in keys {
        let find = |e: &'_ Explanation| e.steps.iter().find(|s| s.access_domain == k).cloned();
        match (find(old), find(new)) {
            (Some(o), Some(n)) => {
                let names = |s: &Step| {
                    s.candidates
                        .iter()
                        .map(|p| p.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                diff(&format!("{k}: candidate pools"), names(&o), names(&n));
                diff(&format!("{k}: policy"), o.policy, n.policy);
                diff(&format!("{k}: route"), o.route, n.route);
                diff(
                    &format!("{k}: pool"),
                    o.pool.unwrap_or_default(),
                    n.pool.unwrap_or_default(),
                );
                diff(
                    &format!("{k}: possible addresses"),
                    sorted(&o.possible),
                    sorted(&n.possible),
                );
                diff(&format!("{k}: ttl"), o.ttl.to_string(), n.ttl.to_string());
            }
            (o, n) => {
                let show = |s: Option<Step>| {
                    s.map_or("(not scheduled)".into(), |s| {
                        format!("scheduled, policy {}", s.policy)
                    })
                };
                diff(k, show(o), show(n));
            }
        }
    }
    let records = |e: &Explanation| {
        let set: BTreeSet<String> = e
            .reply
            .answer
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.rtype, r.data))
            .collect();
        set.into_iter().collect::<Vec<_>>().join(", ")
    };
    diff("rcode", old.reply.rcode.clone(), new.reply.rcode.clone());
    diff("answer", records(old), records(new));
    let scope = |e: &Explanation| e.reply.scope.map_or("none".into(), |s| s.to_string());
    diff("ECS scope", scope(old), scope(new));
    diff("notes", old.notes.join("; "), new.notes.join("; "));
    out
}

fn sorted(v: &[String]) -> String {
    let set: BTreeSet<&String> = v.iter().collect();
    set.into_iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The changes as text.
pub(super) fn changes_text(old: &Explanation, new: &Explanation, c: &[Change]) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    if c.is_empty() {
        let _ = writeln!(
            s,
            "compared with {}: nothing changes for this asker",
            old.config
        );
        return s;
    }
    let _ = writeln!(s, "what changes from {} to {}:", old.config, new.config);
    for ch in c {
        let _ = writeln!(s, "  {}: {} -> {}", ch.what, empty(&ch.old), empty(&ch.new));
    }
    s
}

fn empty(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}
