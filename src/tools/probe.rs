//! `gtmd probe`: asks a server one question as every line of a configuration would (an
//! EDNS Client Subnet per line and family, the default line, and no ECS), and prints what
//! each got: the records, their TTLs, the ECS scope and the RCODE. The network probe tool
//! of the GTM guides, for one's own servers.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::client::{self, Ecs, Options, Reply};
use super::lines::{self, Row};
use super::{load, Failure};

/// What to ask, and of whom.
#[derive(Debug, Clone)]
pub struct Args {
    /// The server.
    pub server: SocketAddr,
    /// The configuration whose lines to pose as (none: only no ECS and `ecs`).
    pub config: Option<PathBuf>,
    /// Extra subnets to ask from.
    pub ecs: Vec<Ecs>,
    /// The name.
    pub name: String,
    /// The type.
    pub qtype: u16,
    /// JSON output.
    pub json: bool,
    /// Transport, timeout, retries.
    pub opts: Options,
}

/// One row's result.
#[derive(Debug, serde::Serialize)]
pub struct Probed {
    /// The asker.
    #[serde(flatten)]
    pub row: Row,
    /// Its reply.
    pub reply: Reply,
}

/// Runs the probe and prints its table (or JSON); an unreachable server or a bad
/// configuration is an error.
pub fn run(a: &Args) -> Result<(), Failure> {
    let mut rows = match &a.config {
        Some(path) => {
            let (_, snap) = load(Some(path.as_path()))?;
            lines::rows(&snap.model, &snap.gslb.lines)
        }
        None => vec![lines::no_ecs()],
    };
    rows.extend(a.ecs.iter().map(|&e| Row {
        line: Some("(--ecs)".into()),
        ecs: Some(e),
    }));
    let name = client::absolute(&a.name);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let reply = client::ask(a.server, &name, a.qtype, row.ecs.as_ref(), &a.opts)
            .map_err(Failure::Network)?;
        out.push(Probed { row, reply });
    }
    if a.json {
        let doc = serde_json::json!({
            "server": a.server.to_string(),
            "name": name,
            "type": client::type_name(a.qtype),
            "rows": out,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("{name} {} at {}", client::type_name(a.qtype), a.server);
        print!("{}", table(&name, &out));
    }
    Ok(())
}

/// The records of an answer in short form: `127.0.0.1` for an address at the question
/// name, `TYPE data` for other types, `owner TYPE data` for other owners.
pub fn short(qname: &str, reply: &Reply) -> String {
    if reply.answer.is_empty() {
        return match reply.authority.iter().find(|r| r.rtype == "SOA") {
            Some(_) if reply.rcode == "NOERROR" => "(no records: NODATA)".into(),
            Some(_) => "(no records)".into(),
            None if !reply.authority.is_empty() => format!(
                "(referral: {})",
                reply
                    .authority
                    .iter()
                    .map(|r| format!("{} {}", r.rtype, r.data))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "(no records)".into(),
        };
    }
    reply
        .answer
        .iter()
        .map(|r| {
            let body = if matches!(r.rtype.as_str(), "A" | "AAAA") {
                r.data.clone()
            } else {
                format!("{} {}", r.rtype, r.data)
            };
            if r.name == qname {
                body
            } else {
                format!("{} {body}", r.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Distinct TTLs of the answer, in order: `30`, `300/30`.
pub fn ttls(reply: &Reply) -> String {
    let mut seen: Vec<u32> = Vec::new();
    for r in &reply.answer {
        if !seen.contains(&r.ttl) {
            seen.push(r.ttl);
        }
    }
    if seen.is_empty() {
        return "-".into();
    }
    seen.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

/// The table: `LINE ECS RCODE SCOPE TTL ANSWER`, columns aligned.
fn table(qname: &str, rows: &[Probed]) -> String {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|p| {
            [
                p.row.label().to_string(),
                p.row.ecs.map_or("-".into(), |e| e.to_string()),
                p.reply.rcode.clone(),
                p.reply.scope.map_or("-".into(), |s| s.to_string()),
                ttls(&p.reply),
                short(qname, &p.reply),
            ]
        })
        .collect();
    render(&["LINE", "ECS", "RCODE", "SCOPE", "TTL", "ANSWER"], &cells)
}

/// Columns aligned on the widest cell; the last column is not padded.
pub fn render<const N: usize>(head: &[&str; N], cells: &[[String; N]]) -> String {
    let mut w = head.map(str::len);
    for c in cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let line = |c: &[&str]| -> String {
        let mut s = String::new();
        for (i, v) in c.iter().enumerate() {
            if i + 1 == N {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    for c in cells {
        out.push_str(&line(&c.each_ref().map(String::as_str)));
    }
    out
}
