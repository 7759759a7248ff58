//! The TOML side of a change: an object is one table of an array of tables
//! (`[[pool]]`, `[[access-domain]]`, ...) in a file parsed with `toml_edit`, so that
//! whatever is not changed (comments, blank lines, key order, the trailing comment of a
//! changed value) is written back as it was. Objects go to and from JSON with the keys
//! the file uses; an object's ETag is a digest of its canonical JSON.

use std::hash::Hasher;

use serde_json::{Map, Value as Json};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

/// An object's table as JSON (`[x.lines]` sub-tables and inline tables as objects).
pub(super) fn table_json(t: &Table) -> Json {
    let mut m = Map::new();
    for (k, item) in t.iter() {
        if let Some(v) = item_json(item) {
            m.insert(k.to_string(), v);
        }
    }
    Json::Object(m)
}

fn item_json(item: &Item) -> Option<Json> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(value_json(v)),
        Item::Table(t) => Some(table_json(t)),
        Item::ArrayOfTables(a) => Some(Json::Array(a.iter().map(table_json).collect())),
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::String(s) => Json::String(s.value().clone()),
        Value::Integer(i) => Json::from(*i.value()),
        Value::Float(f) => serde_json::Number::from_f64(*f.value())
            .map_or_else(|| Json::String(f.value().to_string()), Json::Number),
        Value::Boolean(b) => Json::Bool(*b.value()),
        Value::Datetime(d) => Json::String(d.value().to_string()),
        Value::Array(a) => Json::Array(a.iter().map(value_json).collect()),
        Value::InlineTable(t) => Json::Object(
            t.iter()
                .map(|(k, v)| (k.to_string(), value_json(v)))
                .collect(),
        ),
    }
}

/// A TOML value for a JSON one (objects become inline tables); `field` names it in errors.
pub(super) fn json_value(j: &Json, field: &str) -> Result<Value, String> {
    Ok(match j {
        Json::Null => {
            return Err(format!(
                "{field}: null is not a value (leave the field out)"
            ))
        }
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) if n.is_f64() => Value::from(f),
            _ => return Err(format!("{field}: {n} is out of range")),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => {
            let mut arr = Array::new();
            for (i, e) in a.iter().enumerate() {
                arr.push(json_value(e, &format!("{field}[{i}]"))?);
            }
            Value::Array(arr)
        }
        Json::Object(o) => {
            let mut t = InlineTable::new();
            for (k, v) in o {
                t.insert(k.as_str(), json_value(v, &format!("{field}.{k}"))?);
            }
            Value::InlineTable(t)
        }
    })
}

/// Sets `key` of `t` to `j`, keeping the key's place, the value's decoration (its trailing
/// comment) and the form of a sub-table (`[x.lines]` stays a table).
pub(super) fn set_field(t: &mut Table, key: &str, j: &Json) -> Result<(), String> {
    let mut v = json_value(j, key)?;
    match t.get_mut(key) {
        Some(Item::Table(old)) => match v {
            Value::InlineTable(it) => {
                let mut nt = it.into_table();
                *nt.decor_mut() = old.decor().clone();
                *old = nt;
            }
            other => {
                t.insert(key, Item::Value(other));
            }
        },
        Some(Item::Value(old)) => {
            *v.decor_mut() = old.decor().clone();
            *old = v;
        }
        _ => {
            t.insert(key, Item::Value(v));
        }
    }
    Ok(())
}

/// A new table for `obj`: `name` first, then `type` and `value`, then the rest.
pub(super) fn new_table(obj: &Map<String, Json>) -> Result<Table, String> {
    let mut t = Table::new();
    let first = ["name", "type", "value"];
    for k in first.iter().filter(|k| obj.contains_key(**k)) {
        set_field(&mut t, k, &obj[*k])?;
    }
    for (k, v) in obj.iter().filter(|(k, _)| !first.contains(&k.as_str())) {
        set_field(&mut t, k, v)?;
    }
    Ok(t)
}

/// The tables of `key` in `doc` (`None` when it has none; an error when `key` is there but
/// is not an array of tables, which the API does not rewrite).
pub(super) fn tables<'d>(
    doc: &'d DocumentMut,
    key: &str,
) -> Result<Option<&'d ArrayOfTables>, String> {
    match doc.get(key) {
        None => Ok(None),
        Some(Item::ArrayOfTables(a)) => Ok(Some(a)),
        Some(_) => Err(format!(
            "'{key}' is not written as [[{key}]] tables: the API edits only that form"
        )),
    }
}

/// The tables of `key` in `doc`, to change; an empty array is added when there is none.
pub(super) fn tables_mut<'d>(
    doc: &'d mut DocumentMut,
    key: &str,
) -> Result<&'d mut ArrayOfTables, String> {
    if doc.get(key).is_none() {
        doc.insert(key, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    match doc.get_mut(key) {
        Some(Item::ArrayOfTables(a)) => Ok(a),
        _ => Err(format!(
            "'{key}' is not written as [[{key}]] tables: the API edits only that form"
        )),
    }
}

/// The string `key` of a table, if it is one.
pub(super) fn str_field<'t>(t: &'t Table, key: &str) -> Option<&'t str> {
    t.get(key).and_then(Item::as_str)
}

/// JSON with its object keys sorted, whatever order the map keeps.
pub(super) fn canonical(j: &Json) -> String {
    fn write(j: &Json, out: &mut String) {
        match j {
            Json::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Json::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Json::Array(a) => {
                out.push('[');
                for (i, e) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(e, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    write(j, &mut s);
    s
}

/// The ETag of an object: a digest (SipHash-2-4, fixed key) of its canonical JSON, quoted.
pub(super) fn etag(obj: &Json) -> String {
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0x6774_6d64, 0x6574_6167);
    h.write(canonical(obj).as_bytes());
    format!("\"{:016x}\"", h.finish())
}

/// Whether an `If-Match` header value names `tag` (`*` names any).
pub(super) fn if_match(header: &str, tag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"version = 1   # the format

# Pools
[[pool]]
name = "A"      # first
type = "ipv4"
addresses = ["a1", "a2"]

[[access-domain]]
name = "www.example.test."
type = "A"
policy = "nearest"
[access-domain.lines]
default = ["A"]   # everyone

[[pool]]
name = "B"
type = "ipv4"
addresses = ["b1"]
"#;

    fn pools(doc: &mut DocumentMut) -> &mut ArrayOfTables {
        tables_mut(doc, "pool").unwrap()
    }

    #[test]
    fn a_changed_value_keeps_its_comment_and_the_rest_stays() {
        let mut doc: DocumentMut = TEXT.parse().unwrap();
        let a = pools(&mut doc).get_mut(0).unwrap();
        set_field(a, "name", &Json::from("A2")).unwrap();
        set_field(a, "answers", &Json::from(2)).unwrap();
        let out = doc.to_string();
        assert!(out.contains("name = \"A2\"      # first\n"), "{out}");
        assert!(
            out.contains("addresses = [\"a1\", \"a2\"]\nanswers = 2\n"),
            "{out}"
        );
        assert!(
            out.starts_with("version = 1   # the format\n\n# Pools\n[[pool]]"),
            "{out}"
        );
        assert_eq!(out.replace("A2", "A").replace("answers = 2\n", ""), TEXT);
    }

    #[test]
    fn a_sub_table_stays_a_table() {
        let mut doc: DocumentMut = TEXT.parse().unwrap();
        let ads = tables_mut(&mut doc, "access-domain").unwrap();
        let ad = ads.get_mut(0).unwrap();
        let lines = serde_json::json!({"default": ["B"]});
        set_field(ad, "lines", &lines).unwrap();
        let got = table_json(ad);
        let out = doc.to_string();
        assert!(
            out.contains("[access-domain.lines]\ndefault = [\"B\"]"),
            "{out}"
        );
        assert_eq!(got["lines"], lines);
    }

    #[test]
    fn a_new_table_follows_its_kind_and_a_removed_one_goes_whole() {
        let mut doc: DocumentMut = TEXT.parse().unwrap();
        let obj = serde_json::json!({"type": "ipv6", "addresses": ["c1"], "name": "C"});
        let t = new_table(obj.as_object().unwrap()).unwrap();
        pools(&mut doc).push(t);
        let out = doc.to_string();
        assert!(
            out.ends_with("addresses = [\"b1\"]\n\n[[pool]]\nname = \"C\"\ntype = \"ipv6\"\naddresses = [\"c1\"]\n"),
            "{out}"
        );
        let back: DocumentMut = out.parse().unwrap();
        let c = tables(&back, "pool").unwrap().unwrap().get(2).unwrap();
        assert_eq!(table_json(c), obj);
        pools(&mut doc).remove(2);
        pools(&mut doc).remove(0);
        let out = doc.to_string();
        assert!(
            !out.contains("name = \"A\"") && !out.contains("# first"),
            "{out}"
        );
        assert!(
            out.contains("[access-domain.lines]\ndefault = [\"A\"]   # everyone"),
            "{out}"
        );
    }

    #[test]
    fn etags_follow_content_not_key_order() {
        let a = serde_json::json!({"name": "A", "addresses": ["x"], "answers": 1});
        let b: Json =
            serde_json::from_str(r#"{"answers":1,"addresses":["x"],"name":"A"}"#).unwrap();
        assert_eq!(etag(&a), etag(&b));
        let c = serde_json::json!({"name": "A", "addresses": ["x"], "answers": 2});
        assert_ne!(etag(&a), etag(&c));
        assert!(if_match(&etag(&a), &etag(&b)));
        assert!(if_match("\"x\", *", &etag(&c)));
        assert!(!if_match("\"0000\"", &etag(&c)));
        assert!(json_value(&Json::Null, "f").is_err());
    }
}
