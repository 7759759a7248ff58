//! SVCB and HTTPS record data (RFC 9460): priority, target, and `key[=value]` parameters,
//! values quoted or not, as Knot DNS reads them: parameters sorted by key, a key given
//! twice refused, `mandatory` keys checked present, alpn lists with RFC 9460 Appendix A
//! escapes (`\\,` is a comma inside an ALPN id, `\,` or `,` separates ids).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::fields::{bad, Fields, ScanError};
use super::text;

const KEYS: &[&str] = &[
    "mandatory",
    "alpn",
    "no-default-alpn",
    "port",
    "ipv4hint",
    "ech",
    "ipv6hint",
];

/// A key by name, or as `keyNNNNN` (generic: its value is kept as written, as Knot DNS does).
fn key(name: &[u8]) -> Option<(u16, bool)> {
    if let Some(i) = KEYS.iter().position(|k| k.as_bytes() == name) {
        return Some((i as u16, false));
    }
    let n = name.strip_prefix(b"key")?;
    text::number(n, 65535).ok().map(|v| (v as u16, true))
}

/// SVCB/HTTPS: priority, target name, parameters.
pub(crate) fn svcb(f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let mut w = (f.num("priority", 65535)? as u16).to_be_bytes().to_vec();
    w.extend(f.name("target")?);
    let mut params: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut mandatory = None;
    while f.more() {
        let t = f.next("parameter")?;
        let (k, value) = param(t.raw).map_err(|p| bad(&t, "SVCB parameter", &p))?;
        if params.iter().any(|(pk, _)| *pk == k) {
            return Err(bad(&t, "SVCB parameter", "the key is given twice"));
        }
        if k == 0 {
            mandatory = Some(t);
        }
        params.push((k, value));
    }
    params.sort_by_key(|(k, _)| *k);
    if let (Some(t), Some((0, list))) = (mandatory, params.first()) {
        for m in list.chunks(2) {
            let m = u16::from_be_bytes([m[0], m[1]]);
            if !params.iter().any(|(k, _)| *k == m) {
                return Err(bad(
                    &t,
                    "SVCB parameter",
                    &format!("mandatory key{m} is not given"),
                ));
            }
        }
    }
    for (k, v) in params {
        let len = u16::try_from(v.len()).map_err(|_| f.fail("SVCB parameter too long".into()))?;
        w.extend(k.to_be_bytes());
        w.extend(len.to_be_bytes());
        w.extend(v);
    }
    Ok(w)
}

/// One `key[=value]` token: the key number and the value's wire form.
fn param(raw: &[u8]) -> Result<(u16, Vec<u8>), text::Problem> {
    let (name, value) = match raw.iter().position(|&c| c == b'=') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let (k, generic) = key(name).ok_or(
        "unknown key (mandatory, alpn, no-default-alpn, port, ipv4hint, ech, ipv6hint, keyNNNNN)",
    )?;
    if generic {
        return Ok((k, value.map(text::text).transpose()?.unwrap_or_default()));
    }
    let value = match value {
        None if k == 2 => return Ok((k, Vec::new())),
        None => return Err("this key needs =VALUE".into()),
        Some(_) if k == 2 => return Err("no-default-alpn takes no value".into()),
        Some(v) => text::text(v)?,
    };
    if value.is_empty() {
        return Err("empty value".into());
    }
    let wire = match k {
        0 => mandatory(&value)?,
        1 => alpn(&value)?,
        3 => text::number(&value, 65535).map(|p| (p as u16).to_be_bytes().to_vec())?,
        4 => addresses::<Ipv4Addr>(&value, |a| a.octets().to_vec())?,
        5 => text::base64(&value)?,
        6 => addresses::<Ipv6Addr>(&value, |a| a.octets().to_vec())?,
        _ => value, // no-default-alpn: refused above
    };
    Ok((k, wire))
}

/// `mandatory`: key names, sorted, each once, not `mandatory` itself.
fn mandatory(value: &[u8]) -> Result<Vec<u8>, text::Problem> {
    let mut keys = Vec::new();
    for name in value.split(|&c| c == b',') {
        match key(name) {
            Some((0, _)) => return Err("mandatory cannot list itself".into()),
            Some((k, _)) => keys.push(k),
            None => return Err(format!("unknown key {:?}", String::from_utf8_lossy(name))),
        }
    }
    keys.sort_unstable();
    if keys.windows(2).any(|p| p[0] == p[1]) {
        return Err("a key is listed twice".into());
    }
    Ok(keys.iter().flat_map(|k| k.to_be_bytes()).collect())
}

/// `alpn`: comma-separated ids, each a character-string; `\,` inside the decoded value is a
/// comma in an id, `\\` a backslash.
fn alpn(value: &[u8]) -> Result<Vec<u8>, text::Problem> {
    let mut ids: Vec<Vec<u8>> = vec![Vec::new()];
    let mut it = value.iter();
    while let Some(&c) = it.next() {
        match c {
            b'\\' => match it.next() {
                Some(&e @ (b',' | b'\\')) => ids.last_mut().expect("one id").push(e),
                _ => return Err("in an alpn list '\\' escapes only ',' and '\\'".into()),
            },
            b',' => ids.push(Vec::new()),
            _ => ids.last_mut().expect("one id").push(c),
        }
    }
    let mut w = Vec::new();
    for id in ids {
        if id.is_empty() || id.len() > 255 {
            return Err("each alpn id is 1 to 255 octets".into());
        }
        w.push(id.len() as u8);
        w.extend(id);
    }
    Ok(w)
}

/// A comma-separated list of addresses.
fn addresses<A: std::str::FromStr>(
    value: &[u8],
    octets: impl Fn(A) -> Vec<u8>,
) -> Result<Vec<u8>, text::Problem> {
    let s = std::str::from_utf8(value).map_err(|_| "not ASCII")?;
    let mut w = Vec::new();
    for a in s.split(',') {
        w.extend(octets(a.parse().map_err(|_| format!("bad address {a:?}"))?));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert_eq!(param(b"alpn=h2,h3").unwrap(), (1, b"\x02h2\x02h3".to_vec()));
        assert_eq!(
            param(b"alpn=\"h2,h3\"").unwrap(),
            (1, b"\x02h2\x02h3".to_vec())
        );
        assert_eq!(
            param(b"alpn=h2\\\\,h3").unwrap(),
            (1, b"\x05h2,h3".to_vec())
        );
        assert_eq!(
            param(b"alpn=\"h2\\,h3\"").unwrap(),
            (1, b"\x02h2\x02h3".to_vec())
        );
        assert!(param(b"alpn=h2,,h3").is_err());
        assert!(param(b"alpn=").is_err());
        assert_eq!(param(b"port=443").unwrap(), (3, vec![1, 187]));
        assert_eq!(param(b"no-default-alpn").unwrap(), (2, vec![]));
        assert!(param(b"port").is_err());
        assert_eq!(param(b"key65000").unwrap(), (65000, vec![]));
        assert_eq!(param(b"key3=443").unwrap(), (3, b"443".to_vec()));
        assert_eq!(
            param(b"mandatory=port,alpn").unwrap(),
            (0, vec![0, 1, 0, 3])
        );
        assert!(param(b"mandatory=port,port").is_err());
        assert_eq!(param(b"ipv4hint=1.2.3.4,5.6.7.8").unwrap().1.len(), 8);
        assert!(param(b"foo=1").is_err());
    }
}
