//! Zone file cases as data. Every `tests/zonefile/*.zone` opens with `;!` lines that say
//! what loading it as a zone file must give:
//!
//! ```text
//! ;! origin z.test.          the zone (default z.test.)
//! ;! ok                      loads; then one line per record, RFC 3597 generic form,
//! ;! rr a.z.test. 3600 TYPE1 \# 4 C0000201      (as `kdig +generic` prints knotd's AXFR)
//! ;! error 7: bad IPv4 address "1.2.3"        or: refused, at this line, with this text
//! ;! error included/x.zone:2: ...              (an error in another file, relative path)
//! ;! error *: ...                              (an error not in a zone file)
//! ;! knot: accepts it; gtmd refuses, because   Knot DNS's verdict differs, and why
//! ```
//!
//! `tools/zonefile-rr CASE` prints the `rr` lines as knotd loads the case (with kdig).
//! Each case runs through the real `gtmd check` (exit code; every error line, no others)
//! and, when it loads, through the loader (the records, exactly). Where `kzonecheck`
//! (Knot DNS) is installed, its verdict on each case must be the case's, unless the case
//! has a `;! knot:` line.

use std::path::{Path, PathBuf};
use std::process::Command;

use gtmd::config::{name::display_name, Config, Rdata};

use crate::harness::TempDir;

/// What a case file says it must give.
struct Case {
    path: PathBuf,
    origin: String,
    ok: bool,
    rrs: Vec<String>,
    /// (file relative to the cases folder or `None` for the case itself, line, text);
    /// line 0: an error outside any zone file.
    errors: Vec<(Option<String>, u32, String)>,
    knot_differs: bool,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zonefile")
}

fn parse_case(path: &Path) -> Case {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let mut c = Case {
        path: path.to_path_buf(),
        origin: "z.test.".into(),
        ok: false,
        rrs: Vec::new(),
        errors: Vec::new(),
        knot_differs: false,
    };
    for line in text.lines().filter_map(|l| l.strip_prefix(";! ")) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "origin" => c.origin = rest.into(),
            "ok" => c.ok = true,
            "rr" => c.rrs.push(normalize(rest)),
            "error" => c.errors.push(parse_error(rest)),
            "knot:" => c.knot_differs = true,
            _ => panic!("{}: unknown header line {line:?}", path.display()),
        }
    }
    assert!(
        c.ok == c.errors.is_empty(),
        "{}: say `ok` or give errors",
        path.display()
    );
    c
}

/// `[FILE:]LINE: text` or `*: text`.
fn parse_error(rest: &str) -> (Option<String>, u32, String) {
    let (at, text) = rest.split_once(": ").expect("error LINE: text");
    if at == "*" {
        return (None, 0, text.into());
    }
    let (file, line) = match at.rsplit_once(':') {
        Some((f, l)) => (Some(f.to_string()), l),
        None => (None, at),
    };
    (file, line.parse().expect("error line number"), text.into())
}

/// One record as `owner ttl TYPEn \# len HEX`, blanks collapsed.
fn normalize(s: &str) -> String {
    s.split_whitespace()
        .filter(|w| *w != "IN")
        .collect::<Vec<_>>()
        .join(" ")
}

fn wire(r: &Rdata) -> Vec<u8> {
    match r {
        Rdata::Opaque(v) | Rdata::Name(v) => v.clone(),
        Rdata::Mx(p, n) => [&p.to_be_bytes()[..], n].concat(),
        Rdata::Soa(s) => {
            let times: Vec<u8> = s.times.iter().flat_map(|t| t.to_be_bytes()).collect();
            [&s.mname[..], &s.rname, &times].concat()
        }
    }
}

fn config_text(c: &Case) -> String {
    format!(
        "version = 1\n[[zone]]\nname = {:?}\nfile = {:?}\n",
        c.origin,
        c.path.display().to_string()
    )
}

/// The loader's records, in generic form, sorted.
fn loaded(c: &Case) -> Result<Vec<String>, String> {
    let cfg =
        Config::from_str(&config_text(c), "case.toml".into(), &dir()).map_err(|e| e.to_string())?;
    let mut v: Vec<String> = cfg.zones[0]
        .records
        .iter()
        .map(|r| {
            let w = wire(&r.rdata);
            let hex: String = w.iter().map(|b| format!("{b:02X}")).collect();
            normalize(&format!(
                "{} {} TYPE{} \\# {} {hex}",
                display_name(&r.owner),
                r.ttl,
                r.rtype,
                w.len()
            ))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Checks one case; returns what is wrong with it.
fn run(c: &Case, tmp: &Path) -> Vec<String> {
    let mut wrong = Vec::new();
    let toml = tmp.join("case.toml");
    std::fs::write(&toml, config_text(c)).unwrap();
    let out = Command::new(crate::harness::BIN)
        .args(["check", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() != c.ok {
        wrong.push(format!(
            "gtmd check exit {:?}, stderr:\n{stderr}",
            out.status.code()
        ));
    }
    if c.ok {
        let mut want = c.rrs.clone();
        want.sort();
        match loaded(c) {
            Ok(got) if got == want => {}
            Ok(got) => wrong.push(format!(
                "records:\n  got  {}\n  want {}",
                got.join("\n       "),
                want.join("\n       ")
            )),
            Err(e) => wrong.push(format!("loader: {e}")),
        }
        return wrong;
    }
    wrong.extend(unmatched_errors(c, &stderr));
    wrong
}

/// Every printed error must be one the case lists, and every listed one printed.
fn unmatched_errors(c: &Case, stderr: &str) -> Vec<String> {
    let expect: Vec<(String, &str)> = c
        .errors
        .iter()
        .map(|(file, line, text)| {
            let path = file.as_ref().map_or(c.path.clone(), |f| dir().join(f));
            let prefix = if *line == 0 {
                String::new()
            } else {
                format!("{}:{line}: record: ", path.display())
            };
            (prefix, text.as_str())
        })
        .collect();
    let fits = |l: &str, (prefix, text): &(String, &str)| {
        l.starts_with(prefix.as_str()) && l.contains(text)
    };
    let lines: Vec<&str> = stderr.lines().collect();
    let mut wrong: Vec<String> = lines
        .iter()
        .filter(|l| !expect.iter().any(|e| fits(l, e)))
        .map(|l| format!("unexpected error: {l}"))
        .collect();
    for e in &expect {
        if !lines.iter().any(|l| fits(l, e)) {
            wrong.push(format!("missing error: {}{}\n  got: {stderr}", e.0, e.1));
        }
    }
    wrong
}

/// kzonecheck's verdict, if it is installed.
fn kzonecheck(c: &Case) -> Option<bool> {
    let out = Command::new("kzonecheck")
        .args(["-o", &c.origin])
        .arg(&c.path)
        .output()
        .ok()?;
    Some(out.status.success())
}

#[test]
fn zone_file_cases() {
    let scratch = TempDir::new("zonefile");
    let tmp = scratch.path();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "zone"))
        .collect();
    paths.sort();
    let (mut failures, mut knot_checked, mut differs) = (Vec::new(), 0, 0);
    for p in &paths {
        let c = parse_case(p);
        let mut wrong = run(&c, tmp);
        if let Some(knot_ok) = kzonecheck(&c) {
            knot_checked += 1;
            differs += usize::from(c.knot_differs);
            if (knot_ok == c.ok) == c.knot_differs {
                wrong.push(format!(
                    "kzonecheck says {}, the case says otherwise",
                    if knot_ok { "ok" } else { "error" }
                ));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{}:\n  {}", p.display(), wrong.join("\n  ")));
        }
    }
    eprintln!(
        "{} zone file cases; kzonecheck run on {knot_checked}, agreeing with gtmd on {}",
        paths.len(),
        knot_checked - differs
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
    assert!(
        paths.len() >= 150,
        "at least 150 cases, found {}",
        paths.len()
    );
}
