//! What the query-path fuzz targets share: a snapshot with every kind of answer, the
//! per-thread answer state, and the check that a reply is a well-formed message.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;
use gtmd::tables::gslb::{ClientAddr, Local};
use gtmd::tables::Snapshot;
use gtmd::wire::{respond, Query, Transport};

const CONFIG: &str = r#"version = 1
[[zone]]
name = "z.test."
soa = { mname = "ns1", rname = "hostmaster" }
ns = ["ns1", "ns.outside.example."]
records = [
    "ns1 A 192.0.2.1", "ns1 AAAA 2001:db8::1", "www A 192.0.2.10", "www TXT \"hello\"",
    "mx MX 10 www", "mx MX 20 mail.outside.example.", "srv SRV 0 0 80 www",
    "*.wild A 192.0.2.99", "*.wild MX 10 *.wild.z.test.", "x.wild A 192.0.2.98",
    "*.cw CNAME www", "alias CNAME alias2", "alias2 CNAME www", "loop1 CNAME loop2",
    "loop2 CNAME loop1", "dangling CNAME nothere", "out CNAME www.elsewhere.example.",
    "sub NS ns.sub", "sub NS ns1", "ns.sub A 192.0.2.53", "sub DS 1 8 2 0011223344556677",
    "dn DNAME target", "host.target A 192.0.2.77", "dndeleg DNAME sub.z.test.",
    "dnlong DNAME a123456789012345678901234567890123456789012345678901234567890.b123456789012345678901234567890123456789012345678901234567890.c123456789012345678901234567890123456789012345678901234567890.z.test.",
    "cdn CNAME x.dn", "g2 CNAME gtm", "c2 CNAME gtmc", "b.ent A 192.0.2.20",
]
[[zone]]
name = "child.z.test."
soa = { mname = "ns", rname = "h" }
ns = ["ns"]
records = ["ns A 192.0.2.3", "www A 192.0.2.4"]
[[line]]
name = "l1"
prefixes = ["198.51.100.0/24", "2001:db8:100::/48"]
[[address]]
name = "a1"
value = "192.0.2.101"
[[address]]
name = "a2"
value = "192.0.2.102"
[[address]]
name = "c1"
value = "host.dn.z.test."
[[pool]]
name = "p1"
type = "ipv4"
addresses = ["a1", "a2"]
[[pool]]
name = "p2"
type = "ipv4"
addresses = ["a2"]
[[pool]]
name = "pc"
type = "domain"
addresses = ["c1"]
[[access-domain]]
name = "gtmc.z.test."
type = "CNAME"
policy = "weighted"
pools = ["pc"]
[[access-domain]]
name = "gtm.z.test."
type = "A"
policy = "nearest"
[access-domain.lines]
l1 = ["p2"]
default = ["p1"]
"#;

pub fn snapshot() -> &'static Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let base = std::path::Path::new(".");
        let cfg = gtmd::config::Config::from_str(CONFIG, "fuzz".into(), base).expect("fuzz config");
        let snap = Arc::new(gtmd::compile::compile(&cfg, 1).expect("fuzz compile"));
        // The health writer fills the bitmaps (every address up); it lives as long as we do.
        std::mem::forget(gtmd::health::Writer::new(snap.clone(), Default::default()));
        snap
    })
}

thread_local! {
    static STATE: RefCell<(Query, Local, Vec<u8>)> = RefCell::new((Query::new(), Local::new(7), vec![0; 65535]));
}

/// Every record of every section parses (names, compression, RDATA of known types).
pub fn well_formed(reply: &[u8]) {
    let msg = Message::from_octets(reply).expect("a header");
    let mut section = msg.question().answer().expect("question parses");
    loop {
        for rr in &mut section {
            let rr = rr.expect("record header parses");
            rr.to_record::<AllRecordData<_, ParsedName<_>>>().expect("record data parses");
        }
        match section.next_section() {
            Ok(Some(next)) => section = next,
            Ok(None) => break,
            Err(e) => panic!("section: {e}"),
        }
    }
}


/// Answers `pkt` as a shard would (`how`: bit 0 TCP, bits 1-2 which client) and checks
/// the reply.
pub fn answer(how: u8, pkt: &[u8]) {
    let t = if how & 1 == 0 { Transport::Udp } else { Transport::Tcp };
    let client = match how >> 1 & 3 {
        0 => Some(ClientAddr::V4(0xC633_6407)), // 198.51.100.7: line l1
        1 => Some(ClientAddr::V4(0x0808_0808)), // default line
        2 => Some(ClientAddr::from_v6(0x2001_0db8_0100 << 80)),
        _ => None,
    };
    let snap = snapshot();
    STATE.with(|s| {
        let (q, local, out) = &mut *s.borrow_mut();
        let buf = if t == Transport::Udp { &mut out[..4096] } else { &mut out[..] };
        let o = respond(snap, pkt, q, t, client, local, buf);
        if o.len == 0 {
            return;
        }
        assert!(o.len <= buf.len());
        well_formed(&buf[..o.len]);
    });
}
