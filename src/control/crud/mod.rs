//! The configuration's objects through the control API, in the spirit of GTM's OpenAPI:
//! access domains, address pools, addresses, health check templates and lines, each
//! listed, read, created, replaced, patched and deleted as JSON with the keys of its
//! TOML table (`GET/POST /v1/pools`, `GET/PUT/PATCH/DELETE /v1/pools/NAME`; an access
//! domain is `NAME/TYPE`, or `NAME` when it has one type; `POST
//! /v1/access-domains/NAME[/TYPE]/enable|disable`, and the same for pools and addresses).
//!
//! The files stay the source of truth. A change runs on the control thread, in turn with
//! SIGHUP reloads (`ops.rs`): the object's file (the config file, or for an access domain
//! the included file it came from; new ones go to the config file or `?file=` an included
//! one) is parsed with `toml_edit` and edited in memory (comments and layout kept, `doc.rs`),
//! the edited text is validated by the same loader and compiler as `gtmd check` and, once
//! it compiles, written atomically (`store.rs`) and published by the reload path (no query
//! lost). An invalid change gets 422 with every `file:line: field: reason` and nothing is
//! written. Every object read carries an ETag (a digest of its JSON); `If-Match` on a
//! change that does not match gets 412. Each change is logged once per object, with the
//! token's name, the client, and the digests before and after.

mod change;
mod doc;
pub mod store;

use change::apply;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};
use toml_edit::{DocumentMut, Table};

use super::api::{percent_decode, ApiContext};
use super::http::{self, Request, Response};
use super::ops::{Refusal, Reloader};

/// A kind of object: its path under `/v1/` and its table in the file.
#[derive(Debug)]
struct Kind {
    path: &'static str,
    table: &'static str,
}

static KINDS: [Kind; 5] = [
    Kind {
        path: "access-domains",
        table: "access-domain",
    },
    Kind {
        path: "pools",
        table: "pool",
    },
    Kind {
        path: "addresses",
        table: "address",
    },
    Kind {
        path: "health-checks",
        table: "health-check",
    },
    Kind {
        path: "lines",
        table: "line",
    },
];

/// Most objects one list answer carries (`?limit=`), and how many without it.
const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 1_000;

impl Kind {
    /// Access domains are named by name and type, and may live in included files.
    fn typed(&self) -> bool {
        self.table == "access-domain"
    }

    /// Objects with an `enabled` field: access domains, pools, addresses.
    fn switchable(&self) -> bool {
        matches!(self.table, "access-domain" | "pool" | "address")
    }
}

/// The object a request names: a name, and for an access domain maybe a type.
#[derive(Debug, Clone)]
struct Target {
    kind: &'static Kind,
    name: String,
    rtype: Option<String>,
}

impl Target {
    /// Whether table `t` is this object.
    fn matches(&self, t: &Table) -> bool {
        let Some(name) = doc::str_field(t, "name") else {
            return false;
        };
        if !self.kind.typed() {
            return name == self.name;
        }
        let same_type = match &self.rtype {
            None => true,
            Some(want) => doc::str_field(t, "type").is_some_and(|t| t.eq_ignore_ascii_case(want)),
        };
        same_type && same_name(name, &self.name)
    }

    /// The resource path, for logs.
    fn resource(&self) -> String {
        match &self.rtype {
            Some(t) => format!("/v1/{}/{}/{}", self.kind.path, self.name, t),
            None => format!("/v1/{}/{}", self.kind.path, self.name),
        }
    }
}

/// Domain names compared as DNS compares them (case, a trailing dot, escapes).
fn same_name(a: &str, b: &str) -> bool {
    use crate::config::name::parse_name;
    let absolute = |n: &str| {
        if n.ends_with('.') {
            n.to_string()
        } else {
            format!("{n}.")
        }
    };
    match (
        parse_name(&absolute(a), None),
        parse_name(&absolute(b), None),
    ) {
        (Ok(x), Ok(y)) => x.eq_ignore_ascii_case(&y),
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// What a change does to the object.
#[derive(Debug, Clone)]
enum Op {
    /// `POST /v1/KIND`: a new object, in the config file or `?file=` (access domains).
    Create(Option<String>),
    /// `PUT`: the object becomes the body.
    Replace,
    /// `PATCH`: the body's fields are set, those given as null removed.
    Patch,
    /// `DELETE`.
    Delete,
    /// `POST .../enable|disable`: `enabled` set (every type of the name when none given).
    Enable(bool),
}

/// A change as the control thread runs it.
#[derive(Debug)]
struct Change {
    target: Target,
    op: Op,
    body: Map<String, Json>,
    if_match: Option<String>,
    actor: String,
    client: String,
    method: String,
}

/// The routes of this module: `Some` answer when the path names a kind of object.
pub(super) fn route(
    ctx: &ApiContext,
    (actor, peer): (&str, &http::Peer),
    req: &Request,
    path: &str,
) -> Option<Response> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["v1", kind, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let kind = KINDS.iter().find(|k| k.path == *kind)?;
    let rest: Vec<String> = rest.iter().map(|p| percent_decode(p)).collect();
    if kind.table == "address" && rest.len() == 2 && rest[1] == "override" {
        return None;
    }
    let query = req.target.split_once('?').map_or("", |(_, q)| q);
    let m = req.method.as_str();
    let object = match object_of(kind, &rest) {
        Ok(o) => o,
        Err(resp) => return Some(resp),
    };
    let op = match (m, &object) {
        ("GET", None) => return Some(list(ctx, kind, query)),
        ("GET", Some((t, None))) => return Some(get(ctx, t.clone())),
        ("POST", None) => Op::Create(param(query, "file")),
        ("PUT", Some((_, None))) => Op::Replace,
        ("PATCH", Some((_, None))) => Op::Patch,
        ("DELETE", Some((_, None))) => Op::Delete,
        ("POST", Some((_, Some(on)))) => Op::Enable(*on),
        _ => return Some(Response::error(405, format!("{m} is not allowed here"))),
    };
    let body = match (&op, body_object(req)) {
        (Op::Delete | Op::Enable(_), _) => Map::new(),
        (_, Ok(b)) => b,
        (_, Err(resp)) => return Some(resp),
    };
    let target = match object {
        Some((t, _)) => t,
        None => match target_of_body(kind, &body) {
            Ok(t) => t,
            Err(resp) => return Some(resp),
        },
    };
    let change = Change {
        target,
        op,
        body,
        if_match: req.header("if-match").ok().flatten().map(str::to_string),
        actor: actor.to_string(),
        client: peer.client.to_string(),
        method: m.to_string(),
    };
    Some(ctx.ops.run(move |r| apply(r, change)).unwrap_or_else(|e| e))
}

/// The object a path names under its kind (`None`: the kind itself), and whether it asks
/// to enable (`Some(true)`) or disable one.
type Named = Option<(Target, Option<bool>)>;

fn object_of(kind: &'static Kind, rest: &[String]) -> Result<Named, Response> {
    let target = |name: &str, rtype: Option<&str>| Target {
        kind,
        name: name.to_string(),
        rtype: rtype.map(str::to_ascii_uppercase),
    };
    let switch = |w: &str| match w {
        "enable" => Some(true),
        "disable" => Some(false),
        _ => None,
    };
    let not_found = || Response::error(404, "not found");
    Ok(match rest {
        [] => None,
        [n] if !n.is_empty() => Some((target(n, None), None)),
        [n, w] if switch(w).is_some() && kind.switchable() => Some((target(n, None), switch(w))),
        [n, t] if kind.typed() => Some((target(n, Some(t)), None)),
        [n, t, w] if kind.typed() => {
            let on = switch(w).ok_or_else(not_found)?;
            Some((target(n, Some(t)), Some(on)))
        }
        _ => return Err(not_found()),
    })
}

/// A new object's name (and type) from its body.
fn target_of_body(kind: &'static Kind, body: &Map<String, Json>) -> Result<Target, Response> {
    let field = |k: &str| body.get(k).and_then(Json::as_str).map(str::to_string);
    let name = field("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Response::error(400, "the body needs a \"name\""))?;
    let rtype = match kind.typed() {
        true => Some(
            field("type")
                .ok_or_else(|| Response::error(400, "an access domain needs a \"type\""))?
                .to_ascii_uppercase(),
        ),
        false => None,
    };
    Ok(Target { kind, name, rtype })
}

/// The request body as a JSON object.
fn body_object(req: &Request) -> Result<Map<String, Json>, Response> {
    match serde_json::from_slice::<Json>(&req.body) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(Response::error(400, "the body must be a JSON object")),
        Err(e) => Err(Response::error(400, format!("the body is not JSON: {e}"))),
    }
}

/// The value of `key` in a query string.
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
}

/// An object's file, parsed, with its text as read.
struct File {
    path: PathBuf,
    text: String,
    doc: DocumentMut,
}

/// Reads and parses `path`.
fn read(path: &Path) -> Result<File, Response> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Response::error(422, format!("{}: cannot read: {e}", path.display())))?;
    let doc = text.parse::<DocumentMut>().map_err(|e| {
        let msg = format!(
            "{} does not parse ({}): fix the file first",
            path.display(),
            e.to_string().lines().next().unwrap_or("")
        );
        Response::error(409, msg)
    })?;
    Ok(File {
        path: path.to_path_buf(),
        text,
        doc,
    })
}

/// The files an object of `t` may be in: the config file, and for an access domain the
/// included files the configuration serving has it in.
fn candidate_files(r: &dyn Reloader, main: &Path, t: &Target) -> Vec<PathBuf> {
    let mut files = vec![main.to_path_buf()];
    if t.kind.typed() {
        for ad in &r.current().gslb.access_domains {
            let file = PathBuf::from(&*ad.at.file);
            if files.contains(&file) {
                continue;
            }
            let name = crate::dns::name::display_name(&ad.name);
            let rtype = crate::config::gslb::type_name(ad.rtype);
            if same_name(&name, &t.name) && t.rtype.as_deref().is_none_or(|w| w == rtype) {
                files.push(file);
            }
        }
    }
    files
}

/// The files read, and where the tables found are in them (file index, table index).
type Located = (Vec<File>, Vec<(usize, usize)>);

/// Every table that is `t`, as (file index, table index), with the files read.
fn locate(r: &dyn Reloader, main: &Path, t: &Target) -> Result<Located, Response> {
    let mut files = Vec::new();
    let mut found = Vec::new();
    for path in candidate_files(r, main, t) {
        let f = read(&path)?;
        if let Some(aot) = doc::tables(&f.doc, t.kind.table).map_err(|e| Response::error(409, e))? {
            for (i, table) in aot.iter().enumerate() {
                if t.matches(table) {
                    found.push((files.len(), i));
                }
            }
        }
        files.push(f);
    }
    Ok((files, found))
}

/// The config file, or the answer that there is none.
fn main_file(r: &dyn Reloader) -> Result<PathBuf, Response> {
    r.config_path()
        .map(Path::to_path_buf)
        .ok_or_else(|| Refusal::NoFile.response(r.generation()))
}

/// `GET /v1/KIND/NAME[/TYPE]`: the object, with its ETag.
fn get(ctx: &ApiContext, t: Target) -> Response {
    let r = ctx.ops.run(move |r| -> Result<Response, Response> {
        let main = main_file(r)?;
        let (files, found) = locate(r, &main, &t)?;
        let (fi, ti) = single(&t, &found)?;
        let table = table_at(&files[fi], t.kind, ti)?;
        let obj = doc::table_json(table);
        let mut resp = Response::json(200, obj.clone());
        resp.headers.push(("ETag", doc::etag(&obj)));
        Ok(resp)
    });
    match r {
        Ok(Ok(resp)) | Ok(Err(resp)) | Err(resp) => resp,
    }
}

fn table_at<'f>(f: &'f File, kind: &Kind, i: usize) -> Result<&'f Table, Response> {
    doc::tables(&f.doc, kind.table)
        .ok()
        .flatten()
        .and_then(|a| a.get(i))
        .ok_or_else(|| Response::error(500, "internal: the object moved"))
}

/// The one table found, or 404 (none) or 409 (a name with several types).
fn single(t: &Target, found: &[(usize, usize)]) -> Result<(usize, usize), Response> {
    match found {
        [one] => Ok(*one),
        [] => Err(Response::error(
            404,
            format!(
                "no {} '{}'{}",
                t.kind.table,
                t.name,
                t.rtype
                    .as_ref()
                    .map_or(String::new(), |x| format!(" of type {x}"))
            ),
        )),
        _ => Err(Response::error(
            409,
            format!(
                "'{}' names {} {}s (one per type): add the type, /v1/{}/{}/TYPE",
                t.name,
                found.len(),
                t.kind.table,
                t.kind.path,
                t.name
            ),
        )),
    }
}

/// `GET /v1/KIND`: the objects in file order (the config file, then included files),
/// `?offset=` and `?limit=` to page.
fn list(ctx: &ApiContext, kind: &'static Kind, query: &str) -> Response {
    let num = |k: &str| param(query, k).and_then(|v| v.parse::<usize>().ok());
    let offset = num("offset").unwrap_or(0);
    let limit = num("limit").unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let r = ctx.ops.run(move |r| -> Result<Response, Response> {
        let main = main_file(r)?;
        let mut counts: Vec<(PathBuf, usize)> = vec![(main.clone(), usize::MAX)];
        if kind.typed() {
            let mut by_file: BTreeMap<usize, (PathBuf, usize)> = BTreeMap::new();
            let mut order: Vec<String> = Vec::new();
            for ad in &r.current().gslb.access_domains {
                let f = ad.at.file.to_string();
                if Path::new(&f) == main {
                    continue;
                }
                let i = order.iter().position(|o| *o == f).unwrap_or_else(|| {
                    order.push(f.clone());
                    order.len() - 1
                });
                by_file.entry(i).or_insert((PathBuf::from(&f), 0)).1 += 1;
            }
            counts.extend(by_file.into_values());
        }
        let (mut skip, mut items, mut total) = (offset, Vec::new(), 0usize);
        for (path, count) in counts {
            if count != usize::MAX && (skip >= count || items.len() >= limit) {
                skip = skip.saturating_sub(count);
                total += count;
                continue;
            }
            let f = read(&path)?;
            let aot = doc::tables(&f.doc, kind.table).map_err(|e| Response::error(409, e))?;
            for t in aot.into_iter().flat_map(|a| a.iter()) {
                total += 1;
                if skip > 0 {
                    skip -= 1;
                } else if items.len() < limit {
                    items.push(doc::table_json(t));
                }
            }
        }
        Ok(Response::json(
            200,
            json!({ "items": items, "total": total, "offset": offset, "limit": limit }),
        ))
    });
    match r {
        Ok(Ok(resp)) | Ok(Err(resp)) | Err(resp) => resp,
    }
}
