//! [`super::reader`] against the `toml` crate, on generated included files (valid, and with
//! the mistakes people make: duplicate keys, escapes, unknown fields, wrong types,
//! unterminated strings, tables given twice, dotted keys...) and on random edits of them:
//! whenever the reader takes a file, the `toml` crate must read the same specs (spans
//! included), and reading through the reader (or its fallback) must give the same access
//! domains and the same error lines as reading through the `toml` crate alone.

use std::path::Path;
use std::sync::Arc;

use super::include::{read_validated, Parser};
use super::{reader, tables, Scope};
use crate::config::error::Lines;
use crate::config::spec::Spec;
use crate::config::validate::{self, Ctx};
use crate::config::zone;

/// The main file the generated files resolve against: a zone, lines, pools of each kind.
const MAIN: &str = r#"version = 1
[[zone]]
name = "example.test."
soa = { mname = "ns1", rname = "h" }
ns = ["ns1"]
records = ["ns1 A 192.0.2.1", "www A 192.0.2.9", "alias CNAME www"]
[[line]]
name = "l1"
prefixes = ["10.1.0.0/16"]
[[line]]
name = "l2"
prefixes = ["10.2.0.0/16"]
parent = "l1"
[[address]]
name = "a0"
value = "192.0.2.10"
[[address]]
name = "a1"
value = "192.0.2.11"
[[address]]
name = "a6"
value = "2001:db8::6"
[[address]]
name = "an"
value = "target.example.net."
[[pool]]
name = "p0"
type = "ipv4"
addresses = ["a0"]
[[pool]]
name = "p1"
type = "ipv4"
addresses = ["a1", "a0"]
[[pool]]
name = "p6"
type = "ipv6"
addresses = ["a6"]
[[pool]]
name = "pn"
type = "domain"
addresses = ["an"]
"#;

/// Runs `f` with the scope of [`MAIN`].
fn with_scope(f: impl FnOnce(&Scope<'_>)) {
    let file: Arc<str> = "main.toml".into();
    let lines = Lines::new(MAIN);
    let spec: Spec = validate::parse(MAIN, &file, &lines).expect("main file");
    let mut errs = Vec::new();
    let mut ctx = Ctx {
        file: &file,
        lines: &lines,
        base: Path::new("."),
        overlay: &Default::default(),
        errs: &mut errs,
    };
    let zones = zone::load(&spec.zone, &mut ctx);
    let (g, names) = tables(&spec, &mut ctx);
    assert!(errs.is_empty(), "{errs:?}");
    f(&Scope {
        zones: &zones,
        pools: &g.pools,
        names: &names,
    });
}

/// The access domains and the error lines of `text` read as an included file.
fn outcome(text: &str, scope: &Scope<'_>, parser: Parser) -> String {
    let file: Arc<str> = "inc.toml".into();
    let lines = Lines::new(text);
    let mut errs = Vec::new();
    let mut ctx = Ctx {
        file: &file,
        lines: &lines,
        base: Path::new("."),
        overlay: &Default::default(),
        errs: &mut errs,
    };
    let ads = read_validated(text, &mut ctx, scope, parser);
    let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    format!("{ads:#?}\n{}", errs.join("\n"))
}

/// Both ways agree on `text`; returns whether the reader took it.
fn agree(text: &str, scope: &Scope<'_>) -> bool {
    reader::assert_agrees_with_toml(text);
    assert_eq!(
        outcome(text, scope, Parser::Reader),
        outcome(text, scope, Parser::Toml),
        "outcomes differ for:\n{text}"
    );
    reader::read(text, |_| {}).is_ok()
}

/// xorshift64*: reproducible cases without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// Values for each field: mostly valid, some of the wrong type or beyond the reader.
const NAMES: &[&str] = &[
    r#""s1.example.test.""#,
    r#""S2.Example.Test""#,
    r#"'lit.example.test.'"#,
    r#""*.example.test.""#,
    r#""www.example.test.""#,
    r#""alias.example.test.""#,
    r#""example.test.""#,
    r#""x.other.""#,
    r#""bad..example.test.""#,
    r#""s\u0031.example.test.""#,
    r#""""s3.example.test.""""#,
    r#""unterminated.example.test."#,
    r#""""#,
    "5",
    r#""ü.example.test.""#,
];
const TYPES: &[&str] = &[
    r#""A""#,
    r#""aaaa""#,
    r#""CNAME""#,
    r#""MX""#,
    "1",
    r#"'A'"#,
    r#""A\t""#,
];
const POLICIES: &[&str] = &[
    r#""nearest""#,
    r#""weighted""#,
    r#""round-robin""#,
    r#""global-availability""#,
    r#""bogus""#,
    "true",
];
const TTLS: &[&str] = &[
    "30",
    "0",
    "-1",
    "-0",
    "2147483647",
    "2147483648",
    "0x10",
    "1_000",
    "3.5",
    r#""30""#,
    "99999999999999999999",
    "007",
    "+5",
    "1e3",
    "1979-05-27",
    "inf",
];
const BOOLS: &[&str] = &["true", "false", r#""true""#, "1", "True", "falsey"];
const REMARKS: &[&str] = &[
    r#""""#,
    r#""hello # not a comment""#,
    r#""über 中文""#,
    r#"'lit\eral'"#,
    "\"tab\there\"",
    r#""esc\"aped""#,
    "'''multi'''",
    "7",
];
const POOLS: &[&str] = &[
    r#"["p0"]"#,
    r#"["p0", "p1"]"#,
    r#"[ "p1" , "p0", ]"#,
    r#"[]"#,
    r#"[{ pool = "p0", weight = 3 }, "p1"]"#,
    r#"[{pool="p1",weight=100}]"#,
    r#"[{ pool = "p0", weight = 0 }]"#,
    r#"[{ pool = "p0" }]"#,
    r#"[{}]"#,
    r#"[{ pool = "p0", weight = 2, }]"#,
    r#"[{ pool = "p0", pool = "p1" }]"#,
    r#"[{ "pool" = "p0" }]"#,
    r#"[{ pool = "p0", weight = 2.5 }]"#,
    r#"[{ pool.x = "p0" }]"#,
    r#"[{ pool = "p0", other = true }]"#,
    "[\n  \"p0\", # first\n  # between\n  \"p1\"\n]",
    "[\"p0\",\n]",
    r#"[1]"#,
    r#"[true, "p0"]"#,
    r#"["p6"]"#,
    r#"["pn"]"#,
    r#"["nope"]"#,
    r#"[["p0"]]"#,
    r#""p0""#,
    r#"["p0" "p1"]"#,
    r#"["p0",,"p1"]"#,
];
const FALLBACKS: &[&str] = &[r#""all""#, r#""nodata""#, r#""x""#, "3"];
const LINE_NAMES: &[&str] = &["default", "l1", "l2", "nope", "L1", "l-1_x", "1"];
const LINE_POOLS: &[&str] = &[
    r#"["p0"]"#,
    r#"["p1", "p0"]"#,
    r#"[]"#,
    r#""p0""#,
    r#"["p6"]"#,
    r#"[{ pool = "p0" }]"#,
    "[ # c\n \"p0\",\n]",
    r#"[ 'p1' ]"#,
];
const TRAILERS: &[&str] = &["", "", "", " ", "\t", " # note", "# x", " #", " x"];

/// One `key = value` line of an access domain.
fn field(rng: &mut Rng) -> String {
    let (k, vs) = match rng.below(12) {
        0 | 1 => ("name", NAMES),
        2 => ("type", TYPES),
        3 => ("policy", POLICIES),
        4 => ("ttl", TTLS),
        5 => ("enabled", BOOLS),
        6 => ("preemptive", BOOLS),
        7 => ("remarks", REMARKS),
        8 | 9 => ("pools", POOLS),
        10 => ("fallback", FALLBACKS),
        _ => match rng.below(5) {
            0 => ("fallback-pool", &[r#""p1""#, r#""nope""#][..]),
            1 => ("unknown", &["1"][..]),
            2 => ("lines", &[r#"{ l1 = ["p0"] }"#][..]),
            3 => ("lines.l1", LINE_POOLS),
            _ => ("\"name\"", NAMES),
        },
    };
    let sep = rng.pick(&[" = ", "=", " =\t", "  =  "]);
    format!("{k}{sep}{}", rng.pick(vs))
}

/// A generated included file: mostly valid access domains, with mistakes mixed in.
fn file(rng: &mut Rng) -> String {
    let nl = if rng.one_in(8) { "\r\n" } else { "\n" };
    let mut out = String::new();
    let line = |out: &mut String, rng: &mut Rng, s: &str| {
        if rng.one_in(10) {
            out.push_str(rng.pick(&["", "# comment", "   ", "\t# indented"]));
            out.push_str(nl);
        }
        if rng.one_in(12) {
            out.push_str(rng.pick(&["  ", "\t"]));
        }
        out.push_str(s);
        out.push_str(rng.pick(TRAILERS));
        out.push_str(nl);
    };
    for i in 0..rng.below(5) {
        let header = if rng.one_in(20) {
            rng.pick(&[
                "[[ access-domain ]]",
                "[access-domain]",
                "[other]",
                "[[access-domain]] x",
            ])
        } else {
            "[[access-domain]]"
        };
        line(&mut out, rng, header);
        // Mostly the fields a valid access domain needs, in some order.
        let mut fields = vec![
            format!("name = \"s{i}.example.test.\""),
            format!(
                "type = {}",
                if rng.one_in(4) { "\"AAAA\"" } else { "\"A\"" }
            ),
            format!("policy = {}", rng.pick(&POLICIES[..4])),
        ];
        for _ in 0..rng.below(4) {
            fields.push(field(rng));
        }
        if rng.one_in(6) {
            fields.remove(rng.below(fields.len()));
        }
        for k in (1..fields.len()).rev() {
            fields.swap(k, rng.below(k + 1));
        }
        for f in &fields {
            line(&mut out, rng, f);
        }
        if rng.one_in(2) {
            let h = if rng.one_in(15) {
                rng.pick(&[
                    "[access-domain.lines.x]",
                    "[access-domain . lines]",
                    "[[access-domain.lines]]",
                ])
            } else {
                "[access-domain.lines]"
            };
            for _ in 0..1 + usize::from(rng.one_in(15)) {
                line(&mut out, rng, h);
                for _ in 0..rng.below(4) {
                    let (k, v) = (rng.pick(LINE_NAMES), rng.pick(LINE_POOLS));
                    line(&mut out, rng, &format!("{k} = {v}"));
                }
            }
        }
    }
    if rng.one_in(3) {
        out.truncate(out.trim_end_matches(['\n', '\r']).len());
    }
    out
}

/// Bits of TOML a random edit inserts.
const SNIPPETS: &[&str] = &[
    "\"",
    "'",
    "\\",
    "=",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "\n",
    "\r",
    "\r\n",
    ".",
    " ",
    "\t",
    "-",
    "_",
    "0",
    "9",
    "x",
    "ü",
    "\u{7f}",
    "\u{1}",
    "\u{feff}",
    "true",
    "[[access-domain]]\n",
    "[access-domain.lines]\n",
    "name = \"d.example.test.\"\n",
    "\"\"\"",
    "'''",
];

/// A random edit of `text`: insert a snippet, delete a range, or repeat or drop a line.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut at = rng.below(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let (a, b) = text.split_at(at);
    match rng.below(4) {
        0 | 1 => format!("{a}{}{b}", rng.pick(SNIPPETS)),
        2 => {
            let mut end = (at + 1 + rng.below(8)).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            format!("{a}{}", &text[end..])
        }
        _ => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            if lines.is_empty() {
                return text.to_string();
            }
            let k = rng.below(lines.len());
            let mut v = lines.clone();
            if rng.one_in(2) {
                v.insert(k, lines[k]);
            } else {
                v.remove(k);
            }
            v.concat()
        }
    }
}

#[test]
fn reader_reads_the_common_shape() {
    with_scope(|scope| {
        let text = "# access domains\n[[access-domain]]\nname = \"s0.example.test.\"\n\
            type = \"A\"\npolicy = \"nearest\" # by line\nttl = 60\nenabled = true\n\
            remarks = \"first\"\npools = [\"p1\", { pool = \"p0\", weight = 2 }]\n\
            fallback = \"nodata\"\n[access-domain.lines]\ndefault = [\"p0\"]\nl1 = [\"p1\", \"p0\"]\n\
            \n[[access-domain]]\nname = \"s1.example.test.\"\ntype = \"A\"\npolicy = \"weighted\"\n\
            pools = [\n  \"p0\", # one\n  \"p1\",\n]\nfallback-pool = \"p1\"\npreemptive = false\n";
        assert!(agree(text, scope), "the reader gave a plain file up");
        assert!(agree("", scope));
        assert!(agree("# nothing here\r\n\r\n", scope));
    });
}

/// The generator's seed (`GTMD_READER_SEED` for another one).
fn seed() -> u64 {
    std::env::var("GTMD_READER_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
}

/// Generated files per run (`GTMD_READER_CASES` for a longer hunt).
fn cases_to_run() -> usize {
    std::env::var("GTMD_READER_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500)
}

#[test]
fn reader_agrees_with_toml() {
    with_scope(|scope| {
        let mut rng = Rng(seed());
        let (mut cases, mut took) = (0, 0);
        for _ in 0..cases_to_run() {
            let text = file(&mut rng);
            took += usize::from(agree(&text, scope));
            cases += 1;
            let mut edited = text;
            for _ in 0..4 {
                edited = mutate(&mut rng, &edited);
                took += usize::from(agree(&edited, scope));
                cases += 1;
            }
        }
        eprintln!("the reader took {took} of {cases} files");
        // Both ways are exercised: the reader takes a good share, and gives many up.
        assert!(
            took > cases / 10 && took < cases * 9 / 10,
            "{took} of {cases}"
        );
    });
}
