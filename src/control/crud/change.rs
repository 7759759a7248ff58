//! One change of an object, on the control thread: located in its file, edited in memory,
//! checked against `If-Match`, validated and published by the reload path, which writes
//! the edited files (atomically) once the new configuration has compiled and before it
//! serves; then logged.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};
use toml_edit::Table;
use tracing::info;

use super::{doc, locate, main_file, read, single, Change, File, Op, Target};
use crate::config::{Config, Overlay};
use crate::control::http::Response;
use crate::control::ops::{Refusal, Reloader};

/// Applies `c`; the answer says what happened.
pub(super) fn apply(r: &mut dyn Reloader, c: Change) -> Response {
    match try_apply(r, &c) {
        Ok(resp) | Err(resp) => resp,
    }
}

/// A table changed by a request: its file and index there, and its JSON before.
struct Edit {
    file: usize,
    table: usize,
    before: Option<Json>,
    after: Option<Json>,
}

fn try_apply(r: &mut dyn Reloader, c: &Change) -> Result<Response, Response> {
    let main = main_file(r)?;
    let (mut files, found) = locate(r, &main, &c.target)?;
    let mut edits = match &c.op {
        Op::Create(file) => {
            if !found.is_empty() {
                return Err(Response::error(
                    409,
                    format!("{} already exists", c.target.resource()),
                ));
            }
            vec![create_in(&mut files, &main, file.as_deref(), c)?]
        }
        Op::Enable(_) if !found.is_empty() => found
            .iter()
            .map(|&(file, table)| Edit {
                file,
                table,
                before: None,
                after: None,
            })
            .collect(),
        _ => {
            let (file, table) = single(&c.target, &found)?;
            vec![Edit {
                file,
                table,
                before: None,
                after: None,
            }]
        }
    };
    for e in &mut edits {
        let f = &mut files[e.file];
        let aot = doc::tables_mut(&mut f.doc, c.target.kind.table)
            .map_err(|m| Response::error(409, m))?;
        let Some(t) = aot.get_mut(e.table) else {
            return Err(Response::error(500, "internal: the object moved"));
        };
        if !matches!(c.op, Op::Create(_)) {
            e.before = Some(doc::table_json(t));
        }
        edit(t, c).map_err(|m| Response::error(400, m))?;
        if matches!(c.op, Op::Delete) {
            aot.remove(e.table);
        } else {
            e.after = Some(doc::table_json(t));
        }
    }
    check_if_match(c, &edits)?;
    let overlay: Overlay = edits
        .iter()
        .map(|e| (files[e.file].path.clone(), files[e.file].doc.to_string()))
        .collect();
    let same = |(p, t): (&PathBuf, &String)| files.iter().any(|f| &f.path == p && &f.text == t);
    if overlay.iter().all(same) {
        // Nothing to change (the fields already say so): no reload, no write, no log.
        return Ok(answer(c, &edits, &files, (r.generation(), false)));
    }
    let landed = match &c.op {
        Op::Create(_) => Some(files[edits[0].file].path.clone()),
        _ => None,
    };
    let mut commit = |cfg: &Config| -> Result<(), Refusal> {
        if let Some(p) = &landed {
            check_landed(cfg, &c.target, p)?;
        }
        write_all(&overlay, &files)
    };
    let generation = r
        .reload("change", &overlay, &mut commit)
        .map_err(|e| e.response(r.generation()))?;
    Ok(answer(c, &edits, &files, (generation, true)))
}

/// Adds the new object's table to its file (the config file, or `file` relative to the
/// config file's folder for an access domain); returns where it is.
fn create_in(
    files: &mut Vec<File>,
    main: &Path,
    file: Option<&str>,
    c: &Change,
) -> Result<Edit, Response> {
    let path = match file {
        None => main.to_path_buf(),
        Some(f) if c.target.kind.typed() => {
            crate::config::relative_to(main.parent().unwrap_or(Path::new("")), f)
        }
        Some(_) => {
            return Err(Response::error(
                400,
                "?file= is for access domains: other objects live in the config file",
            ))
        }
    };
    let fi = match files.iter().position(|f| f.path == path) {
        Some(i) => i,
        None => {
            if !files.first().is_some_and(|m| included(m, main, &path)) {
                let why = format!(
                    "{}: not a file the configuration's include patterns name",
                    path.display()
                );
                return Err(Response::error(422, why));
            }
            files.push(read(&path)?);
            files.len() - 1
        }
    };
    let t = doc::new_table(&c.body).map_err(|m| Response::error(400, m))?;
    let aot = doc::tables_mut(&mut files[fi].doc, c.target.kind.table)
        .map_err(|m| Response::error(409, m))?;
    aot.push(t);
    Ok(Edit {
        file: fi,
        table: aot.len() - 1,
        before: None,
        after: None,
    })
}

/// Whether `path` is named by an `include` pattern of the config file `main` (so no other
/// file is ever read or written on a client's say).
fn included(main_file: &File, main: &Path, path: &Path) -> bool {
    let base = main.parent().unwrap_or(Path::new(""));
    let patterns = main_file.doc.get("include").and_then(|i| i.as_array());
    patterns
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .any(|pat| {
            let want = crate::config::relative_to(base, pat);
            let (Some(dir), Some(name)) = (want.parent(), want.file_name()) else {
                return false;
            };
            let file = path.file_name().and_then(|f| f.to_str());
            path.parent() == Some(dir) && file.is_some_and(|f| wildcard(&name.to_string_lossy(), f))
        })
}

/// `*` matches any run of characters; everything else itself (as `include` patterns are
/// read).
fn wildcard(pat: &str, name: &str) -> bool {
    match pat.split_once('*') {
        None => pat == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && wildcard(rest, &tail[i..]))
        }
    }
}

/// Changes table `t` as `c` asks (a new table is already whole; a deleted one is removed
/// by the caller).
fn edit(t: &mut Table, c: &Change) -> Result<(), String> {
    match &c.op {
        Op::Create(_) | Op::Delete => Ok(()),
        Op::Enable(on) => doc::set_field(t, "enabled", &Json::Bool(*on)),
        Op::Patch => {
            for (k, v) in &c.body {
                if v.is_null() {
                    if k == "name" || k == "type" {
                        return Err(format!("{k} cannot be removed"));
                    }
                    t.remove(k);
                } else {
                    doc::set_field(t, k, v)?;
                }
            }
            Ok(())
        }
        Op::Replace => replace(t, &c.body, &c.target),
    }
}

/// The table becomes `body`: its name (and type) kept, fields not in the body removed.
fn replace(t: &mut Table, body: &Map<String, Json>, target: &Target) -> Result<(), String> {
    let mut full = body.clone();
    for key in ["name", "type"] {
        let Some(old) = doc::str_field(t, key).map(str::to_string) else {
            continue;
        };
        match body.get(key) {
            None => {
                full.insert(key.to_string(), Json::String(old));
            }
            Some(Json::String(new))
                if key == "name" && target.kind.typed() && super::same_name(new, &old) => {}
            Some(Json::String(new)) if new.eq_ignore_ascii_case(&old) => {}
            Some(_) => {
                return Err(format!(
                    "PUT keeps the {key} ('{old}'): use PATCH to change it"
                ))
            }
        }
    }
    let gone: Vec<String> = t
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| !full.contains_key(k))
        .collect();
    for k in gone {
        t.remove(&k);
    }
    for (k, v) in &full {
        doc::set_field(t, k, v)?;
    }
    Ok(())
}

/// 412 when `If-Match` names another version of an object being changed.
fn check_if_match(c: &Change, edits: &[Edit]) -> Result<(), Response> {
    let Some(h) = &c.if_match else { return Ok(()) };
    for e in edits {
        let now = e.before.as_ref().map(doc::etag);
        let ok = match &now {
            Some(tag) => doc::if_match(h, tag),
            None => false,
        };
        if !ok {
            return Err(Response::json(
                412,
                json!({
                    "error": "If-Match does not match the object as it is now: read it again",
                    "etag": now,
                }),
            ));
        }
    }
    Ok(())
}

/// A new access domain must be read from the file it was added to (one the configuration
/// includes).
fn check_landed(cfg: &Config, t: &Target, path: &Path) -> Result<(), Refusal> {
    if !t.kind.typed() {
        return Ok(());
    }
    let file = path.display().to_string();
    let landed = cfg.gslb.access_domains.iter().any(|ad| {
        *ad.at.file == *file
            && super::same_name(&crate::dns::name::display_name(&ad.name), &t.name)
            && t.rtype.as_deref() == Some(crate::config::gslb::type_name(ad.rtype))
    });
    if landed {
        Ok(())
    } else {
        Err(Refusal::Other(
            422,
            format!("{file} is not a file the configuration includes: nothing was changed"),
        ))
    }
}

/// Writes every edited file, unless one changed on disk since it was read (a hand edit is
/// never overwritten); when a write fails, those already written get their old text back,
/// so the files and the configuration serving stay the same.
fn write_all(overlay: &Overlay, files: &[File]) -> Result<(), Refusal> {
    for p in overlay.keys() {
        let before = files.iter().find(|f| &f.path == p).map(|f| f.text.as_str());
        if std::fs::read_to_string(p).ok().as_deref() != before {
            let why = format!(
                "{} changed on disk while this change was validated: nothing was changed, \
                 try again",
                p.display()
            );
            return Err(Refusal::Other(409, why));
        }
    }
    let mut written: Vec<&PathBuf> = Vec::new();
    for (path, text) in overlay {
        if let Err(e) = super::store::write_atomic(path, text.as_bytes()) {
            for p in written {
                if let Some(f) = files.iter().find(|f| &f.path == p) {
                    let _ = super::store::write_atomic(p, f.text.as_bytes());
                }
            }
            return Err(Refusal::Other(
                500,
                format!(
                    "{}: cannot write ({e}): nothing was changed",
                    path.display()
                ),
            ));
        }
        written.push(path);
    }
    Ok(())
}

/// Logs the change (a line per object; none when nothing `changed`) and answers with the
/// objects as they are now.
fn answer(
    c: &Change,
    edits: &[Edit],
    files: &[File],
    (generation, changed): (u64, bool),
) -> Response {
    let digest = |j: &Option<Json>| {
        j.as_ref().map_or("-".to_string(), |j| {
            doc::etag(j).trim_matches('"').to_string()
        })
    };
    for e in edits.iter().filter(|_| changed) {
        let resource = match (&e.after, &e.before) {
            (Some(j), _) | (None, Some(j)) => object_resource(&c.target, j),
            _ => c.target.resource(),
        };
        info!(
            actor = %c.actor,
            client = %c.client,
            method = %c.method,
            resource = %resource,
            file = %files[e.file].path.display(),
            before = %digest(&e.before),
            after = %digest(&e.after),
            generation,
            "configuration change"
        );
    }
    let objects: Vec<&Json> = edits.iter().filter_map(|e| e.after.as_ref()).collect();
    let status = if matches!(c.op, Op::Create(_)) {
        201
    } else {
        200
    };
    let mut resp = Response::json(
        status,
        json!({
            "ok": true,
            "generation": generation,
            "changed": changed,
            "file": files[edits[0].file].path.display().to_string(),
            "objects": objects,
        }),
    );
    if let [one] = objects.as_slice() {
        resp.headers.push(("ETag", doc::etag(one)));
    }
    if status == 201 {
        resp.headers.push((
            "Location",
            object_resource(&c.target, &edits[0].after.clone().unwrap_or_default()),
        ));
    }
    resp
}

/// The path of the object `j` is.
fn object_resource(t: &Target, j: &Json) -> String {
    let name = j["name"].as_str().unwrap_or(&t.name);
    match j["type"].as_str().filter(|_| t.kind.typed()) {
        Some(ty) => format!("/v1/{}/{}/{}", t.kind.path, name, ty.to_ascii_uppercase()),
        None => format!("/v1/{}/{}", t.kind.path, name),
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn include_patterns() {
        for (pat, name, want) in [
            ("*.toml", "a.toml", true),
            ("*.toml", "a.toml.bak", false),
            ("ads-*-v*.toml", "ads-eu-v2.toml", true),
            ("ads-*-v*.toml", "ads-eu.toml", false),
            ("eu.toml", "eu.toml", true),
            ("eu.toml", "us.toml", false),
            ("*", "x", true),
        ] {
            assert_eq!(wildcard(pat, name), want, "{pat} {name}");
        }
    }
}
