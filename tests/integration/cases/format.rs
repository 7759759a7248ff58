//! Reads a case of a `tests/cases/*.case` file (the format is `tests/cases/README.md`):
//! the query as wire bytes, the transports, and the expectations, each with its line.
//! Every mistake is `file:line: reason`.

use crate::harness::{class_code, opcode_code, rcode_code, type_code, wire, EdnsSpec};

/// The transports a case is asked over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// One case of a file.
pub(crate) struct Case {
    /// `tests/cases/NAME.case`, for messages.
    pub(crate) file: String,
    pub(crate) name: String,
    /// `case`, or `step` of a scenario.
    pub(crate) kind: &'static str,
    /// The line of `case NAME` (`step NAME`).
    pub(crate) line: usize,
    /// The case's comment lines, without `#`.
    pub(crate) about: Vec<String>,
    /// The configuration under `tests/fixtures/` the case is asked of.
    pub(crate) fixture: String,
    pub(crate) query: Vec<u8>,
    pub(crate) over: Vec<Transport>,
    pub(crate) expect: Vec<Expect>,
}

/// One expectation: its line, the transport it is limited to (`udp:`/`tcp:`), the check.
pub(crate) struct Expect {
    pub(crate) line: usize,
    pub(crate) only: Option<Transport>,
    pub(crate) check: Check,
}

pub(crate) enum Check {
    /// No answer at all (UDP), and the server still answers afterwards.
    Dropped,
    Rcode(u16),
    Opcode(u16),
    /// The header flags under `mask` are `want`.
    Flags {
        mask: u16,
        want: u16,
    },
    /// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT: those given.
    Counts([Option<u16>; 4]),
    /// The question section is the query's, octet for octet.
    QuestionEchoed,
    /// The message's length: exactly, or at most.
    Size {
        at_most: bool,
        octets: usize,
    },
    /// No OPT record.
    NoEdns,
    /// An OPT record: payload and version when given, DO as given, exactly these options
    /// (in any order).
    Edns {
        payload: Option<u16>,
        version: Option<u8>,
        dnssec_ok: bool,
        options: Vec<(usize, OptMatch)>,
    },
    /// A section (0 answer, 1 authority, 2 additional without the OPT): its records
    /// (as a multiset, or in order), or its number of RRsets.
    Section {
        index: usize,
        ordered: bool,
        rrsets: Option<usize>,
        records: Option<Vec<(usize, String)>>,
    },
}

/// An EDNS option expected in the answer.
pub(crate) enum OptMatch {
    Exact(u16, Vec<u8>),
    /// The data starts with `prefix` and has `rest` more octets of any value (a server
    /// cookie).
    Prefix {
        code: u16,
        prefix: Vec<u8>,
        rest: usize,
    },
}

pub(crate) const SECTIONS: [&str; 3] = ["answer", "authority", "additional"];

const FLAGS: [(&str, u16); 8] = [
    ("qr", 0x8000),
    ("aa", 0x0400),
    ("tc", 0x0200),
    ("rd", 0x0100),
    ("ra", 0x0080),
    ("z", 0x0040),
    ("ad", 0x0020),
    ("cd", 0x0010),
];

/// Names of the set flags, as `flags` writes them.
pub(crate) fn flag_names(flags: u16) -> String {
    let v: Vec<&str> = FLAGS
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(n, _)| *n)
        .collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(" ")
    }
}

/// A line of the file: its number, whether indented, its words.
struct Line {
    no: usize,
    indented: bool,
    words: Vec<String>,
}

/// A file's lines (comments apart) and comments, each with its number.
struct Text {
    shown: String,
    lines: Vec<Line>,
    comments: Vec<(usize, String)>,
}

impl Text {
    fn read(dir: &std::path::Path, file: &str) -> Result<Self, String> {
        let shown = format!("tests/cases/{file}");
        let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{shown}: {e}"))?;
        let mut t = Self {
            shown,
            lines: Vec::new(),
            comments: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let no = i + 1;
            let line = raw.trim();
            if let Some(c) = line.strip_prefix('#') {
                t.comments.push((no, c.trim().to_string()));
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let words = split(line).map_err(|e| t.at(no, e))?;
            let indented = raw.starts_with([' ', '\t']);
            t.lines.push(Line {
                no,
                indented,
                words,
            });
        }
        Ok(t)
    }

    fn at(&self, no: usize, why: String) -> String {
        format!("{}:{no}: {why}", self.shown)
    }

    /// Indices of the unindented lines starting with `word`.
    fn starts(&self, word: &str) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|&i| !self.lines[i].indented && self.lines[i].words[0] == word)
            .collect()
    }

    /// The comments between line `i` and line `end` (exclusive; the end of the file).
    fn about(&self, i: usize, end: usize) -> Vec<String> {
        let next_no = self.lines.get(end).map_or(usize::MAX, |l| l.no);
        self.comments
            .iter()
            .filter(|(no, _)| *no > self.lines[i].no && *no < next_no)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The case headed by line `head` (`case NAME`, `step NAME`) made of lines
    /// `body..end`.
    fn case(
        &self,
        head: usize,
        body: usize,
        end: usize,
        name: &str,
        fixture: &str,
    ) -> Result<Case, String> {
        let mut case = Case {
            file: self.shown.clone(),
            name: name.to_string(),
            kind: if self.lines[head].words[0] == "step" {
                "step"
            } else {
                "case"
            },
            line: self.lines[head].no,
            about: self.about(head, end),
            fixture: fixture.to_string(),
            query: Vec::new(),
            over: vec![Transport::Udp, Transport::Tcp],
            expect: Vec::new(),
        };
        parse_body(&self.lines[body..end], &mut case).map_err(|(no, e)| self.at(no, e))?;
        Ok(case)
    }
}

/// Whether `name` is a good case or step name.
fn name_ok(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Loads case `name` of `file` (a file name in `dir`).
pub(crate) fn load(dir: &std::path::Path, file: &str, name: &str) -> Result<Case, String> {
    let t = Text::read(dir, file)?;
    let lines = &t.lines;
    let starts = t.starts("case");
    let first = *starts
        .first()
        .ok_or_else(|| t.at(1, "no `case NAME` line in this file".into()))?;
    // The preamble: lines before the first case.
    let mut fixture = "zones.toml".to_string();
    for l in &lines[..first] {
        match (l.indented, l.words[0].as_str(), l.words.len()) {
            (false, "fixture", 2) => fixture = l.words[1].clone(),
            _ => {
                return Err(t.at(
                    l.no,
                    "before the first case only `fixture FILE` and comments".into(),
                ))
            }
        }
    }
    // The cases: from each `case` line to the next.
    let mut found: Option<(usize, usize)> = None;
    for (k, &s) in starts.iter().enumerate() {
        let l = &lines[s];
        if l.words.len() != 2 {
            if l.words.get(1).map(String::as_str).unwrap_or("") == name {
                return Err(t.at(l.no, "`case` takes one name".into()));
            }
            continue;
        }
        if l.words[1] != name {
            continue;
        }
        if let Some((prev, _)) = found {
            return Err(t.at(
                l.no,
                format!("case {name} is also at line {}", lines[prev].no),
            ));
        }
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        found = Some((s, end));
    }
    let Some((s, end)) = found else {
        return Err(t.at(1, format!("no case named {name:?}")));
    };
    if !name_ok(name) {
        return Err(t.at(
            lines[s].no,
            "a case name is lowercase letters, digits and '-', starting with a letter".into(),
        ));
    }
    t.case(s, s + 1, end, name, &fixture)
}

/// A scenario: a configuration of `examples/` and steps run in order on one gtmd.
pub(crate) struct Scenario {
    /// The file name in `examples/`.
    pub(crate) config: String,
    pub(crate) steps: Vec<Step>,
}

/// What a step does before its query (a case of its own).
pub(crate) struct Step {
    pub(crate) actions: Vec<(usize, Action)>,
    pub(crate) case: Case,
}

pub(crate) enum Action {
    /// An operator override through the control API: `up`, `down` or `auto`.
    Set { address: String, mode: String },
    /// Replace text in the configuration (it must be there).
    Edit { old: String, new: String },
    /// SIGHUP, and wait for the next generation.
    Reload,
}

/// Loads the scenario `file` (a file name in `dir`).
pub(crate) fn load_scenario(dir: &std::path::Path, file: &str) -> Result<Scenario, String> {
    let t = Text::read(dir, file)?;
    let starts = t.starts("step");
    let first = *starts
        .first()
        .ok_or_else(|| t.at(1, "no `step NAME` line in this file".into()))?;
    let config = match &t.lines[..first] {
        [l] if l.words.len() == 2 && l.words[0] == "config" => l.words[1].clone(),
        _ => {
            let no = t.lines.first().map_or(1, |l| l.no);
            return Err(t.at(
                no,
                "before the first step: `config FILE` (of examples/)".into(),
            ));
        }
    };
    let mut steps = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(t.lines.len());
        let head = &t.lines[s];
        let name = match &head.words[..] {
            [_, name] if name_ok(name) => name.clone(),
            _ => {
                return Err(t.at(
                    head.no,
                    "step NAME (lowercase letters, digits and '-')".into(),
                ))
            }
        };
        // The actions come first, then the query and what its answer must be.
        let mut i = s + 1;
        let mut actions = Vec::new();
        while i < end {
            let l = &t.lines[i];
            let action = match (l.indented, &l.words[..]) {
                (false, [w, address, mode]) if w == "set" => Action::Set {
                    address: address.clone(),
                    mode: mode.clone(),
                },
                (false, [w, old, new]) if w == "edit" => Action::Edit {
                    old: text(old).map_err(|e| t.at(l.no, e))?,
                    new: text(new).map_err(|e| t.at(l.no, e))?,
                },
                (false, [w]) if w == "reload" => Action::Reload,
                (false, [w, ..]) if ["set", "edit", "reload"].contains(&w.as_str()) => {
                    return Err(t.at(
                        l.no,
                        "set ADDRESS up|down|auto, edit \"OLD\" \"NEW\" or reload".into(),
                    ))
                }
                _ => break,
            };
            actions.push((l.no, action));
            i += 1;
        }
        let case = t.case(s, i, end, &name, "")?;
        steps.push(Step { actions, case });
    }
    Ok(Scenario { config, steps })
}

type Res<T> = Result<T, (usize, String)>;

/// The lines of one case after `case NAME`.
fn parse_body(lines: &[Line], case: &mut Case) -> Res<()> {
    let mut query = None;
    let mut over = None;
    let mut i = 0;
    while i < lines.len() {
        let head = &lines[i];
        let mut j = i + 1;
        while j < lines.len() && lines[j].indented {
            j += 1;
        }
        let block = &lines[i + 1..j];
        let no = head.no;
        if head.indented {
            return Err((
                no,
                "an indented line belongs under `query`, `edns` or a section".into(),
            ));
        }
        let w = &head.words;
        match w[0].as_str() {
            "query" => {
                if query.is_some() {
                    return Err((no, "a case has one `query`".into()));
                }
                query = Some(parse_query(head, block)?);
            }
            "over" => {
                if over.is_some() || w.len() < 2 {
                    return Err((no, "one `over udp|tcp...` per case".into()));
                }
                let mut v = Vec::new();
                for t in &w[1..] {
                    v.push(transport(t).ok_or((no, format!("{t}: udp or tcp")))?);
                }
                over = Some(v);
                no_block(block)?;
            }
            _ => {
                let (only, words) = match w[0].strip_suffix(':').and_then(transport) {
                    Some(t) if w.len() > 1 => (Some(t), &w[1..]),
                    Some(_) => return Err((no, "nothing after the transport".into())),
                    None => (None, &w[..]),
                };
                let check = parse_expect(no, words, block)?;
                case.expect.push(Expect {
                    line: no,
                    only,
                    check,
                });
            }
        }
        i = j;
    }
    let line = lines.first().map_or(case.line, |l| l.no);
    case.query = query.ok_or((line, "no `query` line".to_string()))?;
    if let Some(v) = over {
        case.over = v;
    }
    if case.expect.is_empty() {
        return Err((line, "no expectation: nothing would be checked".into()));
    }
    for e in &case.expect {
        if matches!(e.check, Check::Dropped) && case.over.contains(&Transport::Tcp) {
            return Err((e.line, "`dropped` is for UDP: add `over udp`".into()));
        }
        if let Some(t) = e.only {
            if !case.over.contains(&t) {
                return Err((
                    e.line,
                    format!("{}: the case is not asked over it", t.name()),
                ));
            }
        }
    }
    Ok(())
}

fn transport(t: &str) -> Option<Transport> {
    match t {
        "udp" => Some(Transport::Udp),
        "tcp" => Some(Transport::Tcp),
        _ => None,
    }
}

fn no_block(block: &[Line]) -> Res<()> {
    match block.first() {
        Some(l) => Err((l.no, "nothing is indented under this line's header".into())),
        None => Ok(()),
    }
}

/// The query line and its indented modifiers, as wire bytes.
fn parse_query(head: &Line, block: &[Line]) -> Res<Vec<u8>> {
    let no = head.no;
    let w = &head.words;
    if w.get(1).map(String::as_str) == Some("raw") {
        no_block(block)?;
        return hex(&w[2..]).map_err(|e| (no, e));
    }
    if w.len() < 3 {
        return Err((
            no,
            "query NAME TYPE [CLASS] [id=N] [flags=F,F] [opcode=OP]".into(),
        ));
    }
    let qtype = type_code(&w[2]).ok_or((no, format!("{}: not a type", w[2])))?;
    let mut rest = &w[3..];
    let mut qclass = 1;
    if let Some(c) = rest.first().filter(|c| !c.contains('=')) {
        qclass = class_code(c).ok_or((no, format!("{c}: not a class")))?;
        rest = &rest[1..];
    }
    let (mut id, mut flags, mut opcode) = (0xBEEFu16, 0x0100u16, 0u16);
    for kv in rest {
        let (k, v) = kv.split_once('=').ok_or((no, format!("{kv}: KEY=VALUE")))?;
        match k {
            "id" => id = number(v).map_err(|e| (no, e))?,
            "opcode" => {
                opcode = opcode_code(v)
                    .filter(|o| *o < 16)
                    .ok_or((no, format!("{v}: not an opcode")))?
            }
            "flags" => {
                flags = 0;
                for f in v.split(',').filter(|f| *f != "none") {
                    flags |= flag_bit(f).ok_or((no, format!("{f}: not a flag")))?;
                }
            }
            _ => return Err((no, format!("{k}: id, flags or opcode"))),
        }
    }
    let mut q = WireQuery {
        id,
        flags: flags | opcode << 11,
        name: wire(&w[1]),
        qtype,
        qclass,
        ..WireQuery::default()
    };
    for l in block {
        modifier(l, &mut q).map_err(|e| (l.no, e))?;
    }
    Ok(q.build())
}

/// A query as the case writes it.
#[derive(Default)]
struct WireQuery {
    id: u16,
    flags: u16,
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    /// payload, version, DO, options
    edns: Option<EdnsSpec>,
    /// Records of the answer, authority and additional sections (the OPT first there).
    records: [Vec<Vec<u8>>; 3],
    counts: [Option<u16>; 4],
}

impl WireQuery {
    fn build(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.flags.to_be_bytes());
        let computed = [
            1,
            self.records[0].len() as u16,
            self.records[1].len() as u16,
            self.edns.is_some() as u16 + self.records[2].len() as u16,
        ];
        for (c, o) in computed.iter().zip(self.counts) {
            p.extend_from_slice(&o.unwrap_or(*c).to_be_bytes());
        }
        p.extend_from_slice(&self.name);
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.qclass.to_be_bytes());
        for r in self.records[0].iter().chain(&self.records[1]) {
            p.extend_from_slice(r);
        }
        if let Some((payload, version, dnssec_ok, opts)) = &self.edns {
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&payload.to_be_bytes());
            p.extend_from_slice(&[0, *version, if *dnssec_ok { 0x80 } else { 0 }, 0]);
            let mut rd = Vec::new();
            for (c, d) in opts {
                rd.extend_from_slice(&c.to_be_bytes());
                rd.extend_from_slice(&(d.len() as u16).to_be_bytes());
                rd.extend_from_slice(d);
            }
            p.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            p.extend_from_slice(&rd);
        }
        for r in &self.records[2] {
            p.extend_from_slice(r);
        }
        p
    }
}

/// One indented line under `query`.
fn modifier(l: &Line, q: &mut WireQuery) -> Result<(), String> {
    let w = &l.words;
    match w[0].as_str() {
        "edns" => {
            if q.edns.is_some() {
                return Err("one `edns` per query (a second OPT: `record additional HEX`)".into());
            }
            let (payload, version, dnssec_ok) = edns_fields(&w[1..])?;
            q.edns = Some((
                payload.unwrap_or(1232),
                version.unwrap_or(0),
                dnssec_ok,
                Vec::new(),
            ));
        }
        "option" => {
            let opts = &mut q.edns.as_mut().ok_or("`edns` before its options")?.3;
            match option(&w[1..])? {
                OptMatch::Exact(code, data) => opts.push((code, data)),
                OptMatch::Prefix { .. } => return Err("server-len is for answers".into()),
            }
        }
        "tsig" => q.records[2].push(tsig(&w[1..], q.id)?),
        "record" => {
            let s = w.get(1).map(String::as_str).unwrap_or("");
            let i = SECTIONS
                .iter()
                .position(|x| *x == s)
                .ok_or("record answer|authority|additional HEX")?;
            q.records[i].push(hex(&w[2..])?);
        }
        "counts" => {
            for kv in &w[1..] {
                let (k, v) = kv.split_once('=').ok_or("counts qd=N an=N ns=N ar=N")?;
                let i = ["qd", "an", "ns", "ar"]
                    .iter()
                    .position(|x| *x == k)
                    .ok_or(format!("{k}: qd, an, ns or ar"))?;
                q.counts[i] = Some(number(v)?);
            }
        }
        x => {
            return Err(format!(
                "{x}: under `query`: edns, option, tsig, record or counts"
            ))
        }
    }
    Ok(())
}

/// `payload=N version=N do`, each optional.
fn edns_fields(words: &[String]) -> Result<(Option<u16>, Option<u8>, bool), String> {
    let (mut payload, mut version, mut dnssec_ok) = (None, None, false);
    for w in words {
        match w.split_once('=') {
            Some(("payload", v)) => payload = Some(number(v)?),
            Some(("version", v)) => version = Some(number::<u8>(v)?),
            None if w == "do" => dnssec_ok = true,
            _ => return Err(format!("{w}: payload=N, version=N or do")),
        }
    }
    Ok((payload, version, dnssec_ok))
}

/// `option ...`: `nsid [DATA]`, `cookie client=HEX [server=HEX | server-len=N]`,
/// `ecs family=N source=N scope=N [address=IP|HEX]`, `CODE [DATA]`; DATA is hex or
/// "text".
fn option(w: &[String]) -> Result<OptMatch, String> {
    let what = w.first().ok_or("option nsid|cookie|ecs|CODE ...")?;
    let kv = |k: &str| {
        w[1..]
            .iter()
            .find_map(|x| x.strip_prefix(k)?.strip_prefix('='))
    };
    for x in &w[1..] {
        if what != "nsid" && x.contains('=') {
            let k = x.split('=').next().unwrap_or("");
            let known: &[&str] = match what.as_str() {
                "cookie" => &["client", "server", "server-len"],
                "ecs" => &["family", "source", "scope", "address"],
                _ => &[],
            };
            if !known.contains(&k) {
                return Err(format!("{x}: not a field of option {what}"));
            }
        }
    }
    Ok(match what.as_str() {
        "cookie" => {
            let mut data = hex_str(kv("client").ok_or("option cookie client=HEX ...")?)?;
            match (kv("server"), kv("server-len")) {
                (Some(s), None) => data.extend(hex_str(s)?),
                (None, Some(n)) => {
                    return Ok(OptMatch::Prefix {
                        code: 10,
                        prefix: data,
                        rest: number(n)?,
                    })
                }
                (None, None) => {}
                _ => return Err("server= or server-len=, not both".into()),
            }
            OptMatch::Exact(10, data)
        }
        "ecs" => {
            let field = |k: &str| kv(k).ok_or(format!("option ecs: {k}= missing"));
            let mut d = number::<u16>(field("family")?)?.to_be_bytes().to_vec();
            let source: u8 = number(field("source")?)?;
            d.push(source);
            d.push(number(field("scope")?)?);
            d.extend(ecs_address(kv("address").unwrap_or(""), source)?);
            OptMatch::Exact(8, d)
        }
        code => {
            let code = if code == "nsid" { 3 } else { number(code)? };
            let data = match w.get(1) {
                None => Vec::new(),
                Some(t) if w.len() == 2 && t.starts_with('"') => unquote(t)?,
                Some(_) => hex(&w[1..])?,
            };
            OptMatch::Exact(code, data)
        }
    })
}

/// An ECS address: an IPv4 or IPv6 address cut to the octets `source` bits need
/// (RFC 7871 6), or the octets themselves in hex (any number: malformed ones too).
fn ecs_address(a: &str, source: u8) -> Result<Vec<u8>, String> {
    let octets = match a.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.octets().to_vec(),
        Ok(std::net::IpAddr::V6(v6)) => v6.octets().to_vec(),
        Err(_) => return hex_str(a),
    };
    let n = usize::from(source).div_ceil(8);
    octets
        .get(..n)
        .map(<[u8]>::to_vec)
        .ok_or(format!("{a}: shorter than {source} bits"))
}

/// A TSIG record: `KEY ALGORITHM [mac=HEX]`; time signed 0x65000001 (1694498817), fudge
/// 300, original ID the query's, no error, no other data.
fn tsig(w: &[String], id: u16) -> Result<Vec<u8>, String> {
    let [key, alg, rest @ ..] = w else {
        return Err("tsig KEY ALGORITHM [mac=HEX]".into());
    };
    let mac = match rest {
        [] => Vec::new(),
        [m] => hex_str(m.strip_prefix("mac=").ok_or("tsig ... mac=HEX")?)?,
        _ => return Err("tsig KEY ALGORITHM [mac=HEX]".into()),
    };
    let mut r = wire(key);
    r.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
    let mut rd = wire(alg);
    rd.extend_from_slice(&[0, 0, 0x65, 0, 0, 1, 1, 44]);
    rd.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    rd.extend_from_slice(&mac);
    rd.extend_from_slice(&id.to_be_bytes());
    rd.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
    r.extend_from_slice(&rd);
    Ok(r)
}

/// One expectation line (without its `udp:`/`tcp:`) and its indented lines.
fn parse_expect(no: usize, w: &[String], block: &[Line]) -> Res<Check> {
    let err = |e: String| (no, e);
    let arg = || w.get(1).map(String::as_str).unwrap_or("");
    let one = |what: &str| -> Res<()> {
        if w.len() == 2 {
            Ok(())
        } else {
            Err((no, format!("{} takes one {what}", w[0])))
        }
    };
    let check = match w[0].as_str() {
        "dropped" if w.len() == 1 => Check::Dropped,
        "rcode" => {
            one("rcode")?;
            Check::Rcode(rcode_code(arg()).ok_or(err(format!("{}: not an rcode", arg())))?)
        }
        "opcode" => {
            one("opcode")?;
            Check::Opcode(opcode_code(arg()).ok_or(err(format!("{}: not an opcode", arg())))?)
        }
        "flags" => {
            let partial = w[1..].iter().any(|f| f.starts_with(['+', '-']));
            let (mut mask, mut want) = (0, 0);
            if !partial {
                mask = FLAGS.iter().map(|(_, b)| b).sum();
            }
            for f in w[1..].iter().filter(|f| *f != "(none)") {
                let (set, name) = match f.split_at(1) {
                    ("+", n) if partial => (true, n),
                    ("-", n) if partial => (false, n),
                    _ if partial => {
                        return Err(err(format!("{f}: +FLAG or -FLAG, not both forms")))
                    }
                    _ => (true, f.as_str()),
                };
                let bit = flag_bit(name).ok_or(err(format!("{name}: not a flag")))?;
                mask |= bit;
                if set {
                    want |= bit;
                }
            }
            Check::Flags { mask, want }
        }
        "counts" => {
            let mut c = [None; 4];
            for kv in &w[1..] {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or(err("counts qd=N an=N ns=N ar=N".into()))?;
                let i = ["qd", "an", "ns", "ar"]
                    .iter()
                    .position(|x| *x == k)
                    .ok_or(err(format!("{k}: qd, an, ns or ar")))?;
                c[i] = Some(number(v).map_err(err)?);
            }
            Check::Counts(c)
        }
        "question" if arg() == "echoed" && w.len() == 2 => Check::QuestionEchoed,
        "size" => match &w[1..] {
            [n] => Check::Size {
                at_most: false,
                octets: number(n).map_err(err)?,
            },
            [op, n] if op == "<=" => Check::Size {
                at_most: true,
                octets: number(n).map_err(err)?,
            },
            _ => return Err(err("size N, or size <= N".into())),
        },
        "edns" if arg() == "(none)" && w.len() == 2 => Check::NoEdns,
        "edns" => {
            let (payload, version, dnssec_ok) = edns_fields(&w[1..]).map_err(err)?;
            let mut options = Vec::new();
            for l in block {
                if l.words[0] != "option" {
                    return Err((l.no, "only `option` lines go under `edns`".into()));
                }
                options.push((l.no, option(&l.words[1..]).map_err(|e| (l.no, e))?));
            }
            return Ok(Check::Edns {
                payload,
                version,
                dnssec_ok,
                options,
            });
        }
        s if SECTIONS.contains(&s) => return section(no, w, block),
        x => {
            return Err(err(format!(
                "{x}: not an expectation (dropped, rcode, opcode, flags, counts, question, \
                 size, edns, answer, authority, additional)"
            )))
        }
    };
    no_block(block)?;
    Ok(check)
}

/// `answer|authority|additional [ordered | (none) | rrsets=N]` and its record lines.
fn section(no: usize, w: &[String], block: &[Line]) -> Res<Check> {
    let index = SECTIONS.iter().position(|s| *s == w[0]).unwrap_or(0);
    let (mut ordered, mut none, mut rrsets) = (false, false, None);
    for m in &w[1..] {
        match m.as_str() {
            "ordered" => ordered = true,
            "(none)" => none = true,
            _ => match m.strip_prefix("rrsets=") {
                Some(n) => rrsets = Some(number(n).map_err(|e| (no, e))?),
                None => return Err((no, format!("{m}: ordered, (none) or rrsets=N"))),
            },
        }
    }
    let records: Vec<(usize, String)> = block.iter().map(|l| (l.no, l.words.join(" "))).collect();
    for l in block {
        if l.words.len() < 4 || l.words[1].parse::<u32>().is_err() {
            return Err((l.no, "a record is OWNER TTL CLASS TYPE DATA".into()));
        }
    }
    let records = match (none, records.is_empty()) {
        (true, true) => Some(records),
        (true, false) => return Err((no, "(none), yet records follow".into())),
        (false, false) => Some(records),
        (false, true) if rrsets.is_some() => None,
        (false, true) => return Err((no, "records below it, (none) or rrsets=N".into())),
    };
    if ordered && records.as_ref().is_none_or(|r| r.is_empty()) {
        return Err((no, "ordered needs records".into()));
    }
    Ok(Check::Section {
        index,
        ordered,
        rrsets,
        records,
    })
}

fn flag_bit(name: &str) -> Option<u16> {
    FLAGS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// A number, decimal or `0x` hex.
fn number<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    v.ok()
        .and_then(|v| T::try_from(v).ok())
        .ok_or(format!("{s}: not a number in range"))
}

/// Hex octets, split over words as the writer likes.
fn hex(words: &[String]) -> Result<Vec<u8>, String> {
    hex_str(&words.concat())
}

fn hex_str(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{s}: not hex octets"));
    }
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect())
}

/// A quoted string as text.
fn text(t: &str) -> Result<String, String> {
    String::from_utf8(unquote(t)?).map_err(|_| format!("{t}: not UTF-8"))
}

/// A quoted string's octets (`\"`, `\\` and `\DDD` escapes).
fn unquote(t: &str) -> Result<Vec<u8>, String> {
    let inner = t
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .ok_or(format!("{t}: unterminated string"))?;
    let b = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push(number(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or(""))?);
            i += 4;
        } else if b[i] == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The words of a line: split at blanks, a "quoted string" (with `\` escapes) one word.
pub(crate) fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '\\' if quoted => {
                cur.push(c);
                cur.extend(chars.next());
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated \"string\"".into());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}
