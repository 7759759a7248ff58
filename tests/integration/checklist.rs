//! End-to-end: the real `gtmd` binary, queried over UDP and TCP, with both I/O backends.
//! Each block below is one row of `DNS-CHECKLIST.md` (the row number is in the comment).

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

const A: u16 = 1;
const NS: u16 = 2;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const MX: u16 = 15;
const TXT: u16 = 16;
const AAAA: u16 = 28;
const SRV: u16 = 33;
const ANY: u16 = 255;

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
const BADVERS: u16 = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
enum T {
    Udp,
    Tcp,
}

fn ask(s: &Server, q: &Q, t: T) -> Msg {
    match t {
        T::Udp => s
            .udp(&q.build())
            .unwrap_or_else(|| panic!("no UDP answer for {:?}", q.name)),
        T::Tcp => s.tcp(&q.build()),
    }
}

/// Runs `check` on the answer over UDP and over TCP.
fn both(s: &Server, q: Q, check: impl Fn(&Msg, T)) {
    for t in [T::Udp, T::Tcp] {
        let m = ask(s, &q, t);
        check(&m, t);
    }
}

fn server(io: &str) -> Server {
    let cfg = fixture("zones.toml");
    let s = Server::start(&["--config", cfg.to_str().unwrap(), "--io", io]);
    // `auto` is recvmmsg/sendmmsg (the measured cheaper backend, PERF.md).
    let want = if io == "io-uring" {
        "io=\"io-uring"
    } else {
        "io=\"mmsg\""
    };
    s.wait_log(want, Duration::from_secs(2));
    s
}

fn suite(s: &Server) {
    // 3: flags, ID and question echoed; AA; RD copied; RA, Z, AD clear; CD copied.
    for rd in [0x0100u16, 0] {
        let mut q = Q::new("www.example.test", A);
        q.flags = rd | 0x0010; // RD as given, CD set
        q.id = 0x1234;
        both(s, q.clone(), |m, t| {
            assert_eq!(m.id, 0x1234, "{t:?}");
            assert!(m.aa(), "{t:?}");
            assert_eq!(m.flags & 0x0100, rd, "RD copied {t:?}");
            assert_eq!(m.flags & 0x0080, 0, "RA clear");
            assert_eq!(m.flags & 0x0060, 0, "Z and AD clear");
            assert_eq!(m.flags & 0x0010, 0x0010, "CD copied");
            assert_eq!(m.flags & 0x8000, 0x8000, "QR");
            assert_eq!(m.question_raw, q.build()[12..].to_vec());
            assert_eq!(m.answers(A), vec!["192.0.2.10", "192.0.2.11"]);
            assert_eq!(m.answer[0].ttl, 300);
            assert!(m.opt().is_none(), "no OPT unless sent");
        });
    }

    // 4: opcode other than QUERY: NOTIMP, RD and CD not copied (RFC 8906 8.1.4), OPT
    // when the query's was well formed.
    for opcode in [1u16, 2, 5] {
        for edns in [false, true] {
            let mut q = Q::new("www.example.test", A);
            if edns {
                q = q.edns(1232);
            }
            q.flags = opcode << 11 | 0x0110;
            both(s, q, |m, t| {
                assert_eq!(m.rcode(), NOTIMP, "{t:?}");
                assert_eq!((m.flags >> 11) & 0xF, opcode, "opcode echoed");
                assert!(!m.aa());
                assert_eq!(m.flags & 0x0110, 0, "RD, CD clear");
                assert_eq!(m.opt().is_some(), edns, "OPT iff sent");
                assert_eq!(m.counts[1..3], [0, 0]);
            });
        }
    }

    // 5: QDCOUNT != 1, records in answer/authority, two OPT records.
    let mut q = Q::new("www.example.test", A);
    q.counts_override = Some([0, 0, 0, 0]);
    let mut raw = q.build();
    raw.truncate(12);
    for t in [T::Udp, T::Tcp] {
        let m = match t {
            T::Udp => s.udp(&raw).unwrap(),
            T::Tcp => s.tcp(&raw),
        };
        assert_eq!(m.rcode(), FORMERR, "qdcount 0 {t:?}");
    }
    let mut q = Q::new("www.example.test", A);
    q.counts_override = Some([2, 0, 0, 0]);
    both(s, q, |m, t| {
        assert_eq!(m.rcode(), FORMERR, "qdcount 2 {t:?}")
    });
    let mut q = Q::new("www.example.test", A);
    q.counts_override = Some([1, 1, 0, 0]);
    q.extra_ar
        .push(vec![0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    both(s, q, |m, t| {
        assert_eq!(m.rcode(), FORMERR, "ancount 1 {t:?}")
    });
    let mut q = Q::new("www.example.test", A).edns(1232);
    q.extra_ar.push(vec![0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
    both(s, q, |m, t| {
        assert_eq!(m.rcode(), FORMERR, "two OPT {t:?}");
        assert!(m.opt().is_none(), "no OPT echoed for a broken one");
    });
    // A FORMERR to a query whose OPT was well formed carries OPT (RFC 6891 7), DO copied.
    let mut q = Q::new("www.example.test", A).edns(1232);
    q.edns.as_mut().unwrap().2 = true;
    q.counts_override = Some([1, 1, 0, 1]);
    let mut raw = q.build();
    let opt_at = raw.len() - 11;
    let rr = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4];
    raw.splice(opt_at..opt_at, rr);
    for t in [T::Udp, T::Tcp] {
        let m = match t {
            T::Udp => s.udp(&raw).unwrap(),
            T::Tcp => s.tcp(&raw),
        };
        assert_eq!(m.rcode(), FORMERR, "answer record {t:?}");
        let o = m.opt().expect("OPT in the FORMERR");
        assert_eq!(o.ttl & 0x8000, 0x8000, "DO copied");
    }
    // An OPT owned by a compression pointer to the root label is the root (RFC 1035 4.1.4).
    let mut q = Q::new("www.example.test", A);
    q.counts_override = Some([1, 0, 0, 1]);
    let mut raw = q.build();
    let root = 12 + wire("www.example.test").len() - 1;
    raw.extend_from_slice(&[0xC0, root as u8, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    let m = s.udp(&raw).unwrap();
    assert_eq!(m.rcode(), NOERROR, "OPT owner pointer");
    assert!(m.opt().is_some());

    // 22: transfers are not configured: REFUSED over UDP and TCP (never NOERROR without
    // the SOA first, RFC 5936 2.2), also an IXFR carrying its SOA in authority.
    for qt in [251u16, 252] {
        both(s, Q::new("example.test", qt).edns(1232), |m, t| {
            assert_eq!(m.rcode(), REFUSED, "xfr {qt} {t:?}");
            assert_eq!(m.counts[1..3], [0, 0], "xfr {qt} {t:?}");
        });
    }
    let mut q = Q::new("example.test", 251);
    q.counts_override = Some([1, 0, 1, 0]);
    let mut raw = q.build();
    raw.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22]);
    raw.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0,
    ]);
    assert_eq!(s.udp(&raw).unwrap().rcode(), REFUSED, "IXFR with its SOA");

    // 23: TSIG with no keys configured: NOTAUTH and an unsigned TSIG with error BADKEY
    // (RFC 8945 5.2); a TSIG not last, or two: FORMERR.
    let tsig: Vec<u8> = {
        let mut r = wire("k1");
        r.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
        let mut rd = wire("hmac-sha256");
        rd.extend_from_slice(&[0, 0, 0x65, 0x00, 0x00, 0x01, 1, 44]); // time, fudge 300
        rd.extend_from_slice(&[0, 4, 9, 9, 9, 9]); // MAC
        rd.extend_from_slice(&[0xBE, 0xEF, 0, 0, 0, 0]); // original ID, error, other
        r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        r.extend_from_slice(&rd);
        r
    };
    let mut q = Q::new("www.example.test", A).edns(1232);
    q.extra_ar.push(tsig.clone());
    both(s, q, |m, t| {
        assert_eq!(m.rcode(), 9, "NOTAUTH {t:?}");
        assert!(m.answer.is_empty());
        let last = m.additional.last().expect("TSIG");
        assert_eq!(last.rtype, 250, "TSIG last");
        let rd = &last.rdata;
        let alg = wire("hmac-sha256").len();
        assert_eq!(
            &rd[alg..alg + 8],
            &[0, 0, 0x65, 0, 0, 1, 1, 44],
            "time, fudge"
        );
        assert_eq!(
            &rd[alg + 8..],
            &[0, 0, 0xBE, 0xEF, 0, 17, 0, 0],
            "no MAC, BADKEY"
        );
        assert!(m.opt().is_some(), "OPT before the TSIG");
    });
    // A BADKEY reply too long for 512 octets (long key and algorithm names): TC over UDP,
    // the whole TSIG over TCP.
    let long = |c: char| {
        (0..3)
            .map(|_| c.to_string().repeat(60))
            .collect::<Vec<_>>()
            .join(".")
    };
    let big_tsig: Vec<u8> = {
        let mut r = wire(&long('k'));
        r.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
        let mut rd = wire(&long('h'));
        rd.extend_from_slice(&[0, 0, 0x65, 0, 0, 1, 1, 44, 0, 0, 0xBE, 0xEF, 0, 0, 0, 0]);
        r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        r.extend_from_slice(&rd);
        r
    };
    let mut q = Q::new(&format!("{}.example.test", long('q')), A);
    q.extra_ar.push(big_tsig);
    let m = s.udp(&q.build()).unwrap();
    assert_eq!(m.rcode(), 9);
    assert!(m.tc() && m.raw.len() <= 512, "{} octets", m.raw.len());
    let m = s.tcp(&q.build());
    assert_eq!(
        m.additional.last().map(|r| r.rtype),
        Some(250),
        "TSIG over TCP"
    );
    for twice in [true, false] {
        let mut q = Q::new("www.example.test", A);
        q.extra_ar.push(tsig.clone());
        q.extra_ar.push(if twice {
            tsig.clone()
        } else {
            vec![0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]
        });
        both(s, q, |m, t| {
            assert_eq!(m.rcode(), FORMERR, "TSIG twice={twice} {t:?}");
        });
    }

    // 6: classes.
    let mut q = Q::new("version.bind", TXT);
    q.qclass = 3;
    both(s, q, |m, _| {
        assert_eq!(m.rcode(), NOERROR);
        assert_eq!(m.answers(TXT), vec!["gtmd-test"]);
        assert_eq!(m.answer[0].class, 3);
    });
    let mut q = Q::new("ID.Server", TXT);
    q.qclass = 3;
    both(s, q, |m, _| assert_eq!(m.answers(TXT), vec!["test-node-1"]));
    let mut q = Q::new("other.bind", TXT);
    q.qclass = 3;
    both(s, q, |m, _| assert_eq!(m.rcode(), REFUSED));
    for class in [4u16, 254] {
        let mut q = Q::new("www.example.test", A);
        q.qclass = class;
        both(s, q, |m, t| {
            assert_eq!(m.rcode(), REFUSED, "class {class} {t:?}")
        });
    }
    // QCLASS * (RFC 1035 3.2.5) matches the IN data, as Knot and NSD answer it.
    let mut q = Q::new("www.example.test", A);
    q.qclass = 255;
    both(s, q, |m, t| {
        assert_eq!(m.answers(A), vec!["192.0.2.10", "192.0.2.11"], "{t:?}");
        assert!(m.aa());
    });

    // 7: outside every zone.
    for n in ["www.example.com", "test", "xexample.test", "."] {
        both(s, Q::new(n, A), |m, t| {
            assert_eq!(m.rcode(), REFUSED, "{n} {t:?}");
            assert!(!m.aa());
            assert!(m.answer.is_empty());
        });
    }

    // 8 + 9: unknown type (NODATA), NXDOMAIN, NODATA, empty non-terminal; negative TTL is
    // min(SOA TTL 3600, minimum 300) = 300.
    let negative = |m: &Msg, rcode: u16, what: &str| {
        assert_eq!(m.rcode(), rcode, "{what}");
        assert!(m.aa(), "{what}");
        assert!(m.answer.is_empty(), "{what}");
        assert_eq!(m.authority.len(), 1, "{what}");
        assert_eq!(m.authority[0].rtype, SOA, "{what}");
        assert_eq!(m.authority[0].name, "example.test.", "{what}");
        assert_eq!(m.authority[0].ttl, 300, "{what}");
        assert!(m.authority[0]
            .data
            .starts_with("ns1.example.test. hostmaster.example.test. 2026112301"));
    };
    both(s, Q::new("www.example.test", 666), |m, _| {
        negative(m, NOERROR, "type666")
    });
    both(s, Q::new("www.example.test", MX), |m, _| {
        negative(m, NOERROR, "nodata")
    });
    both(s, Q::new("nope.example.test", A), |m, _| {
        negative(m, NXDOMAIN, "nxdomain")
    });
    both(s, Q::new("a.b.c.nope.example.test", A), |m, _| {
        negative(m, NXDOMAIN, "deep nxdomain")
    });
    both(s, Q::new("ent.example.test", A), |m, _| {
        negative(m, NOERROR, "empty non-terminal")
    });
    both(s, Q::new("b.ent.example.test", A), |m, _| {
        assert_eq!(m.answers(A), vec!["192.0.2.20"])
    });

    // 10: EDNS.
    both(s, Q::new("www.example.test", A).edns(4096), |m, t| {
        let o = m.opt().expect("OPT echoed");
        assert_eq!(o.name, ".");
        assert_eq!(o.class, 1232, "our payload {t:?}");
        assert_eq!((o.ttl >> 16) & 0xFF, 0, "version 0");
        assert!(o.rdata.is_empty());
    });
    let mut q = Q::new("www.example.test", A).edns(1232);
    q.edns.as_mut().unwrap().1 = 1;
    both(s, q, |m, t| {
        assert_eq!(m.rcode(), BADVERS, "{t:?}");
        assert!(m.answer.is_empty() && m.authority.is_empty());
        let o = m.opt().unwrap();
        assert_eq!((o.ttl >> 16) & 0xFF, 0, "reply version 0");
    });
    let mut q = Q::new("www.example.test", A)
        .edns(1232)
        .opt(65001, b"xyz")
        .opt(10, &[1; 8]);
    q.edns.as_mut().unwrap().2 = true;
    both(s, q, |m, _| {
        let o = m.opt().unwrap();
        assert!(
            m.options(65001).is_empty(),
            "unknown options are not echoed"
        );
        // The client cookie is, with our server cookie (tests/cookies.rs has the rest).
        let c = m.option(10).expect("COOKIE answered");
        assert_eq!((c.len(), &c[..8]), (24, &[1u8; 8][..]));
        assert_eq!(o.rdata.len(), 4 + 24, "no other option");
        assert_eq!(o.ttl & 0x8000, 0x8000, "DO copied");
        assert_eq!(m.answers(A).len(), 2);
    });
    // payload below 512 counts as 512: a ~240 octet answer fits.
    let m = ask(s, &Q::new("www.example.test", TXT).edns(100), T::Udp);
    assert!(!m.tc());

    // 11: TC with no partial RRsets, exactly at the size boundary; OPT still present.
    let full = ask(s, &Q::new("big.example.test", TXT).edns(4096), T::Tcp);
    let size = full.raw.len() as u16;
    assert!(size > 512 && size < 1232, "fixture size {size}");
    let fits = ask(s, &Q::new("big.example.test", TXT).edns(size), T::Udp);
    assert!(!fits.tc());
    assert_eq!(fits.answer.len(), 4);
    let trunc = ask(s, &Q::new("big.example.test", TXT).edns(size - 1), T::Udp);
    assert!(trunc.tc());
    assert!(trunc.aa());
    assert_eq!(trunc.counts[1..3], [0, 0], "no partial RRsets");
    assert!(trunc.opt().is_some(), "OPT still present");
    let no_edns = ask(s, &Q::new("big.example.test", TXT), T::Udp);
    assert!(no_edns.tc(), "512 without EDNS");
    let huge = ask(s, &Q::new("huge.example.test", TXT).edns(65000), T::Udp);
    assert!(huge.tc(), "our 1232 cap applies whatever the client offers");
    assert!(huge.raw.len() <= 1232);
    let huge_tcp = ask(s, &Q::new("huge.example.test", TXT).edns(65000), T::Tcp);
    assert!(!huge_tcp.tc());
    assert_eq!(huge_tcp.answer.len(), 12);

    // 13: ANY: one RRset over UDP, all over TCP.
    let m = ask(s, &Q::new("www.example.test", ANY), T::Udp);
    let types: std::collections::BTreeSet<u16> = m.answer.iter().map(|r| r.rtype).collect();
    assert_eq!(types.len(), 1, "one RRset over UDP: {types:?}");
    let m = ask(s, &Q::new("www.example.test", ANY), T::Tcp);
    let types: std::collections::BTreeSet<u16> = m.answer.iter().map(|r| r.rtype).collect();
    assert_eq!(types, [A, TXT, AAAA].into_iter().collect());

    // 14: ECS echoed with scope 0 (static answers do not depend on the asker); FORMERR cases.
    both(
        s,
        Q::new("www.example.test", A)
            .edns(1232)
            .ecs(1, 24, 0, &[198, 51, 100]),
        |m, t| {
            let o = m.opt().unwrap();
            assert_eq!(
                o.rdata,
                vec![0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100],
                "{t:?}"
            );
            assert_eq!(m.answers(A).len(), 2);
        },
    );
    both(
        s,
        Q::new("www.example.test", A)
            .edns(1232)
            .ecs(2, 56, 0, &[0x20, 1, 0xd, 0xb8, 0, 0, 0]),
        |m, _| {
            assert_eq!(m.opt().unwrap().rdata[..8], [0, 8, 0, 11, 0, 2, 56, 0]);
        },
    );
    both(
        s,
        Q::new("www.example.test", A).edns(1232).ecs(1, 0, 0, &[]),
        |m, _| {
            assert_eq!(m.opt().unwrap().rdata, vec![0, 8, 0, 4, 0, 1, 0, 0]);
        },
    );
    let bad_ecs: [(u16, u8, u8, &[u8]); 5] = [
        (1, 24, 8, &[198, 51, 100]),  // scope set in a query
        (3, 24, 0, &[198, 51, 100]),  // unknown family
        (1, 33, 0, &[1, 2, 3, 4, 5]), // prefix too long for v4
        (1, 16, 0, &[198, 51, 100]),  // address longer than the prefix needs
        (1, 23, 0, &[198, 51, 101]),  // bits set past the prefix
    ];
    for (fam, src, scope, addr) in bad_ecs {
        both(
            s,
            Q::new("www.example.test", A)
                .edns(1232)
                .ecs(fam, src, scope, addr),
            |m, t| {
                assert_eq!(m.rcode(), FORMERR, "ecs {fam}/{src}/{scope} {t:?}");
            },
        );
    }

    // 15: names: forward/self pointers, labels > 63, names > 255.
    let mut q = Q::new("www.example.test", A);
    q.counts_override = Some([1, 0, 0, 1]);
    let mut raw = q.build();
    let at = raw.len();
    raw.extend_from_slice(&[0xC0, at as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]); // self pointer
    assert_eq!(s.udp(&raw).unwrap().rcode(), FORMERR);
    let mut long = vec![64u8];
    long.extend_from_slice(&[b'a'; 64]);
    long.extend_from_slice(&wire("example.test"));
    let mut q = Q::new("x", A);
    q.name = long;
    assert_eq!(s.udp(&q.build()).unwrap().rcode(), FORMERR);
    let mut q = Q::new("x", A);
    q.name = Vec::new();
    for _ in 0..5 {
        q.name.push(60);
        q.name.extend_from_slice(&[b'b'; 60]);
    }
    q.name.extend_from_slice(&wire("example.test"));
    assert_eq!(s.udp(&q.build()).unwrap().rcode(), FORMERR);

    // 16: 0x20 case preserved byte for byte; owner names point at the question.
    both(s, Q::new("wWw.ExAmPlE.tEsT", A), |m, _| {
        assert_eq!(&m.question_raw[..18], &wire("wWw.ExAmPlE.tEsT")[..]);
        assert!(m.answer.iter().all(|r| r.name == "wWw.ExAmPlE.tEsT."));
    });

    // 17: CNAME followed inside the zone; loops stopped; never out of zone.
    both(s, Q::new("alias.example.test", A), |m, _| {
        assert_eq!(
            m.answers(CNAME),
            vec!["alias2.example.test.", "www.example.test."]
        );
        assert_eq!(m.answers(A), vec!["192.0.2.10", "192.0.2.11"]);
        assert_eq!(m.rcode(), NOERROR);
    });
    both(s, Q::new("alias.example.test", CNAME), |m, _| {
        assert_eq!(m.answers(CNAME), vec!["alias2.example.test."]);
        assert_eq!(m.answer.len(), 1);
    });
    both(s, Q::new("alias.example.test", MX), |m, _| {
        assert_eq!(m.answer.len(), 2, "CNAMEs then NODATA");
        assert_eq!(m.authority[0].rtype, SOA);
    });
    both(s, Q::new("loop1.example.test", A), |m, _| {
        assert_eq!(m.rcode(), NOERROR);
        assert_eq!(
            m.answers(CNAME),
            vec!["loop1.example.test.", "loop2.example.test."]
        );
    });
    both(s, Q::new("out.example.test", A), |m, _| {
        assert_eq!(m.answer.len(), 1);
        assert_eq!(m.answers(CNAME), vec!["www.elsewhere.invalid."]);
    });
    both(s, Q::new("dangling.example.test", A), |m, _| {
        assert_eq!(m.rcode(), NXDOMAIN);
        assert_eq!(m.answer.len(), 1);
        assert_eq!(m.authority[0].rtype, SOA);
    });

    // 18: wildcards (RFC 4592): synthesized with the query name; not across existing names;
    // not below a delegation.
    both(s, Q::new("Foo.Bar.wild.example.test", A), |m, _| {
        assert_eq!(m.answers(A), vec!["192.0.2.99"]);
        assert_eq!(m.answer[0].name, "Foo.Bar.wild.example.test.");
        assert!(m.aa());
    });
    both(s, Q::new("q.wild.example.test", MX), |m, _| {
        negative(m, NOERROR, "wildcard nodata")
    });
    both(s, Q::new("x.wild.example.test", A), |m, _| {
        assert_eq!(m.answers(A), vec!["192.0.2.98"])
    });
    both(s, Q::new("y.x.wild.example.test", A), |m, _| {
        negative(m, NXDOMAIN, "blocked by x.wild")
    });
    both(s, Q::new("a.long.name.cnw.example.test", A), |m, _| {
        assert_eq!(m.answer[0].name, "a.long.name.cnw.example.test.");
        assert_eq!(m.answers(CNAME), vec!["www.example.test."]);
        assert_eq!(m.answers(A), vec!["192.0.2.10", "192.0.2.11"]);
    });
    both(s, Q::new("host.sub.example.test", A), |m, t| {
        assert!(!m.aa(), "referral is not authoritative {t:?}");
        assert!(m.answer.is_empty());
        assert_eq!(m.authority.len(), 1);
        assert_eq!(m.authority[0].rtype, NS);
        assert_eq!(m.authority[0].name, "sub.example.test.");
        assert_eq!(
            m.additional
                .iter()
                .filter(|r| r.rtype == A)
                .map(|r| r.data.clone())
                .collect::<Vec<_>>(),
            vec!["192.0.2.200"]
        );
    });

    // Zone file zone, other record types.
    both(s, Q::new("host.other.test", AAAA), |m, _| {
        assert_eq!(m.answers(AAAA), vec!["2001:db8::1"])
    });
    both(s, Q::new("_sip._tcp.other.test", SRV), |m, _| {
        assert_eq!(m.answer.len(), 1);
        assert_eq!(m.answer[0].ttl, 600);
    });
    both(s, Q::new("nothing.other.test", A), |m, _| {
        assert_eq!(m.rcode(), NXDOMAIN);
        assert_eq!(m.authority[0].ttl, 60, "min(600, 60)");
        assert_eq!(m.authority[0].name, "other.test.");
    });
    both(s, Q::new("example.test", NS), |m, _| {
        assert_eq!(
            m.answers(NS),
            vec!["ns1.example.test.", "ns2.example.test."]
        );
    });
    both(s, Q::new("mail.example.test", MX), |m, _| {
        assert_eq!(m.answers(MX), vec!["10 www.example.test."])
    });
}

/// Rows 1 and 2 over UDP: QR set and short packets get no answer at all.
fn drops(s: &Server) {
    let mut q = Q::new("www.example.test", A);
    q.flags |= 0x8000;
    assert!(
        s.udp_raw(&q.build(), Duration::from_millis(300)).is_none(),
        "QR set"
    );
    for n in [0usize, 1, 11] {
        let pkt = vec![0u8; n];
        if n > 0 {
            assert!(
                s.udp_raw(&pkt, Duration::from_millis(200)).is_none(),
                "{n} bytes"
            );
        }
    }
    // still serving afterwards
    assert!(s.udp(&Q::new("www.example.test", A).build()).is_some());
}

/// Row 12: TCP pipelining, short messages, idle timeout, connection cap.
fn tcp_behaviour(s: &Server) {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let names = [
        "www.example.test",
        "nope.example.test",
        "alias.example.test",
        "b.ent.example.test",
    ];
    let mut burst = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut q = Q::new(n, A);
        q.id = 100 + i as u16;
        let b = q.build();
        burst.extend_from_slice(&(b.len() as u16).to_be_bytes());
        burst.extend_from_slice(&b);
    }
    c.write_all(&burst).unwrap(); // all four in one segment
    let mut ids: Vec<u16> = (0..4)
        .map(|_| Msg::parse(&tcp_recv(&mut c).unwrap()).id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec![100, 101, 102, 103]);
    // a message shorter than a header closes the connection
    c.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
    assert!(tcp_recv(&mut c).is_none(), "closed after a short message");
    // idle timeout (2 s in the fixture)
    let mut idle = TcpStream::connect(s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    let r = std::io::Read::read(&mut idle, &mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "idle connection closed");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "idle close after {waited:?}"
    );
}

#[test]
fn checklist_io_uring() {
    let s = server("io-uring");
    suite(&s);
    drops(&s);
    tcp_behaviour(&s);
}

#[test]
fn checklist_mmsg() {
    let s = server("mmsg");
    suite(&s);
    drops(&s);
    tcp_behaviour(&s);
}

#[test]
fn counters_and_clean_shutdown() {
    let mut s = server("auto");
    for _ in 0..5 {
        s.udp(&Q::new("www.example.test", A).build()).unwrap();
    }
    s.udp(&Q::new("nope.example.test", A).build()).unwrap();
    s.udp(&Q::new("www.example.com", A).build()).unwrap();
    let _ = s.udp_raw(&[1, 2, 3], Duration::from_millis(100));
    s.tcp(&Q::new("www.example.test", A).build());
    let (took, status) = s.stop();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(1), "stopped in {took:?}");
    let line = s.wait_log("shutdown summary", Duration::from_secs(1));
    for want in [
        "queries=9 ",
        "noerror=6 ",
        "nxdomain=1 ",
        "refused=1 ",
        "dropped=1 ",
        "tcp_queries=1 ",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}

/// A zone named `.` holds every name and answers for them (issue 9); its file uses TTL
/// units, `@` in record data, a blank-led owner and `$INCLUDE`.
#[test]
fn root_zone_from_a_zone_file() {
    let cfg = fixture("root.toml");
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    both(&s, Q::new(".", SOA), |m, t| {
        assert_eq!(m.rcode(), NOERROR, "{t:?}");
        assert_eq!(
            m.answers(SOA),
            vec!["ns.example. hostmaster.example. 2026120301 28800 7200 2419200 3600"]
        );
        assert_eq!(m.answer[0].ttl, 86400);
    });
    both(&s, Q::new("a", A), |m, t| {
        assert_eq!(m.answers(A), vec!["192.0.2.1"], "{t:?}");
        assert_eq!(m.answer[0].ttl, 300);
    });
    both(&s, Q::new("a", AAAA), |m, _| {
        assert_eq!(m.answers(AAAA), vec!["2001:db8::1"]);
        assert_eq!(m.answer[0].ttl, 3600);
    });
    both(&s, Q::new("alias", CNAME), |m, _| {
        assert_eq!(m.answers(CNAME), vec!["."])
    });
    both(&s, Q::new("mx", MX), |m, _| {
        assert_eq!(m.answers(MX), vec!["10 a."])
    });
    both(&s, Q::new("txt", TXT), |m, _| {
        assert_eq!(m.answers(TXT), vec!["a b c"])
    });
    both(&s, Q::new("inc", A), |m, _| {
        assert_eq!(m.answers(A), vec!["192.0.2.2"])
    });
    both(&s, Q::new("nope", A), |m, _| {
        assert_eq!(m.rcode(), NXDOMAIN);
        assert_eq!(m.authority[0].rtype, SOA);
    });
    both(&s, Q::new("www.example", A), |m, _| {
        assert_eq!(m.rcode(), NOERROR);
        assert!(!m.aa(), "a referral");
        assert_eq!(m.authority[0].rtype, NS);
        assert_eq!(m.authority[0].name, "example.");
    });
}

/// A config from the fixture with one shard and `server` lines added to `[server]`.
fn tcp_limits_config(name: &str, server: &str) -> std::path::PathBuf {
    let dir = tempdir();
    let cfg = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(fixture("zones.toml"))
        .unwrap()
        .replace("tcp-max-connections = 64", server)
        .replace("shards = [0, 1]", "shards = [0]")
        .replace(
            "file = \"other.test.zone\"",
            &format!("file = \"{}\"", fixture("other.test.zone").display()),
        );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A blocking connection from the loopback address `src` (any port).
fn tcp_from(src: [u8; 4], dst: std::net::SocketAddr) -> TcpStream {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SockAddr::from(std::net::SocketAddr::from((src, 0))))
        .unwrap();
    s.connect(&SockAddr::from(dst)).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Whether `c` answers a query within its read timeout.
fn tcp_answers(c: &mut TcpStream) -> bool {
    let q = Q::new("www.example.test", A).build();
    let mut b = (q.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(&q);
    c.write_all(&b).is_ok() && tcp_recv(c).is_some_and(|r| Msg::parse(&r).answers(A).len() == 2)
}

/// Whether gtmd closed `c` (EOF or reset within its read timeout).
fn tcp_closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match std::io::Read::read(c, &mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// RFC 7766 6.2.3: at the cap the connection idle the longest is closed to admit a new
/// one; a source over its own limit is closed at once and takes no one's place.
#[test]
fn tcp_connection_cap() {
    let cfg = tcp_limits_config(
        "cap",
        "tcp-max-connections = 3\ntcp-max-connections-per-source = 2",
    );
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    // two idle connections from 127.0.0.1: its limit
    let mut oldest = tcp_from([127, 0, 0, 1], s.addr);
    std::thread::sleep(Duration::from_millis(50));
    let mut second = tcp_from([127, 0, 0, 1], s.addr);
    std::thread::sleep(Duration::from_millis(50));
    let mut over = tcp_from([127, 0, 0, 1], s.addr);
    assert!(tcp_closed(&mut over), "a third from one source is closed");
    // another source fills the cap, and queries
    let mut active = tcp_from([127, 3, 0, 1], s.addr);
    assert!(tcp_answers(&mut active));
    // a new connection at the cap: the longest-idle one makes room
    let mut fresh = tcp_from([127, 3, 0, 2], s.addr);
    assert!(
        tcp_answers(&mut fresh),
        "a new connection at the cap is served"
    );
    assert!(
        tcp_closed(&mut oldest),
        "the longest-idle connection was closed"
    );
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(!tcp_closed(&mut second), "the others stay");
    assert!(tcp_answers(&mut active));
    assert!(tcp_answers(&mut second));
}

/// RFC 7766 10 (Knot's tcp-io-timeout): a message whose first octet arrived must be
/// complete within the I/O timeout, however the octets trickle in; a silent connection
/// lasts until the idle timeout (2 s), and a message split in parts that come within the
/// I/O timeout is answered.
#[test]
fn tcp_io_timeout() {
    let cfg = tcp_limits_config("io", "tcp-max-connections = 64\ntcp-io-timeout = 0.3");
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let q = Q::new("www.example.test", A).build();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    // split in three parts 100 ms apart: answered
    let mut split = tcp_from([127, 0, 0, 1], s.addr);
    for part in [&framed[..1], &framed[1..9], &framed[9..]] {
        split.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(tcp_recv(&mut split).is_some_and(|r| Msg::parse(&r).answers(A).len() == 2));
    // one octet every 100 ms: closed about 0.3 s after the first
    let mut trickle = tcp_from([127, 0, 0, 1], s.addr);
    let silent = tcp_from([127, 0, 0, 1], s.addr);
    let t0 = Instant::now();
    let mut closed_after = None;
    for &octet in framed.iter() {
        if trickle.write_all(&[octet]).is_err() {
            closed_after = Some(t0.elapsed());
            break;
        }
        trickle
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if tcp_closed(&mut trickle) {
            closed_after = Some(t0.elapsed());
            break;
        }
    }
    let after = closed_after.expect("a trickled message is cut off");
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(1000),
        "closed {after:?} after its first octet"
    );
    // the silent one is still there (idle timeout 2 s)
    let mut silent = silent;
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        !tcp_closed(&mut silent),
        "a silent connection waits for the idle timeout"
    );
    assert!(tcp_answers(&mut silent));
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gtmd-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Reload while queries flow: the good config takes over with no query lost or wrong; a
/// bad one is rejected, logged, and the previous one keeps serving.
#[test]
fn reload_good_and_bad_while_querying() {
    let dir = tempdir();
    let cfg = dir.join("reload.toml");
    let write = |addr: &str| {
        std::fs::write(
            &cfg,
            format!(
                "version = 1\n[server]\nshards = [0, 1]\n[[zone]]\nname = \"r.test.\"\n\
                 soa = {{ mname = \"ns\", rname = \"h\" }}\nns = [\"ns\"]\n\
                 records = [\"ns A 192.0.2.1\", \"svc 30 A {addr}\"]\n"
            ),
        )
        .unwrap()
    };
    write("192.0.2.100");
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let querier = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        let mut lost = 0;
        let mut n = 0u32;
        while !st.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
            n += 1;
            let mut q = Q::new("svc.r.test", A);
            q.id = n as u16;
            match udp_exchange(addr, &q.build(), Duration::from_secs(1)) {
                Some(r) => {
                    let m = Msg::parse(&r);
                    assert_eq!(m.id, n as u16);
                    assert_eq!(m.rcode(), NOERROR, "answer during reload");
                    assert_eq!(m.answer.len(), 1);
                    *seen.entry(m.answer[0].data.clone()).or_default() += 1;
                }
                None => lost += 1,
            }
        }
        (seen, lost, n)
    });
    std::thread::sleep(Duration::from_millis(300));
    write("192.0.2.200");
    s.signal(libc::SIGHUP);
    s.wait_log("generation=2", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    // A bad config: rejected, old one serves.
    std::fs::write(
        &cfg,
        "version = 1\n[[zone]]\nname = \"r.test.\"\nsoa = { mname = \"ns\" }\n",
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("reload rejected: still serving", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, lost, n) = querier.join().unwrap();
    assert_eq!(lost, 0, "no query lost during reloads ({n} sent)");
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        vec!["192.0.2.100", "192.0.2.200"],
        "{seen:?}"
    );
    assert!(
        s.count_log("reload rejected: ") >= 2,
        "the error itself is logged too"
    );
    let m = s.udp(&Q::new("svc.r.test", A).build()).unwrap();
    assert_eq!(
        m.answers(A),
        vec!["192.0.2.200"],
        "previous config still serving"
    );
    // Zone data cut short mid-record (a deploy caught half way), as a file and inline:
    // rejected with its place named; the process lives on and the old snapshot serves.
    let zone = dir.join("r.zone");
    let cut = "$ORIGIN r.test.\n@ 60 SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\np TXT ( \"a\"";
    std::fs::write(&zone, cut).unwrap();
    let inline = "version = 1\n[[zone]]\nname = \"r.test.\"\n\
                  soa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n\
                  records = [\"ns A 192.0.2.1\", \"p TXT ( \\\"a\\\"\"]\n";
    let file = "version = 1\n[[zone]]\nname = \"r.test.\"\nfile = \"r.zone\"\n";
    for (k, text) in [inline, file].into_iter().enumerate() {
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "check exits 1: {err}");
        let place = ["reload.toml:6: record: ", "r.zone:5: record: "][k];
        assert!(err.contains(place), "the place {place}: {err}");
        assert!(
            !err.contains("internal"),
            "an error, not a contained bug: {err}"
        );
        s.signal(libc::SIGHUP);
        let t0 = Instant::now();
        while s.count_log("still serving the previous configuration") < 2 + k {
            assert!(t0.elapsed() < Duration::from_secs(5), "reload rejected");
            std::thread::sleep(Duration::from_millis(20));
        }
        let m = s
            .udp(&Q::new("svc.r.test", A).build())
            .expect("still alive");
        assert_eq!(m.answers(A), vec!["192.0.2.200"]);
    }
}

/// Three zones nested: DS at the innermost apex is answered by its nearest parent (RFC 4035
/// 3.1.4.1), not by the outermost zone; names below each apex are the innermost zone's.
#[test]
fn nested_zones_answer_ds_from_the_nearest_parent() {
    let dir = tempdir();
    let cfg = dir.join("nested.toml");
    let zone = |name: &str, extra: &str| {
        format!(
            "[[zone]]\nname = \"{name}\"\nsoa = {{ mname = \"ns\", rname = \"h\" }}\nns = [\"ns\"]\n\
             records = [\"ns A 192.0.2.1\"{extra}]\n"
        )
    };
    let text = format!(
        "version = 1\n{}{}{}",
        zone(
            "test.",
            ", \"example NS ns.example\", \"ns.example A 192.0.2.2\""
        ),
        zone(
            "example.test.",
            ", \"sub NS ns.sub\", \"ns.sub A 192.0.2.3\", \"sub DS 1 8 2 00112233\""
        ),
        zone("sub.example.test.", ", \"www A 192.0.2.4\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    both(&s, Q::new("sub.example.test", 43), |m, t| {
        assert_eq!(m.rcode(), NOERROR, "{t:?}");
        assert!(m.aa(), "{t:?}");
        assert_eq!(m.answer.len(), 1, "the DS of example.test.: {m:?}");
        assert_eq!(m.answer[0].rtype, 43);
    });
    both(&s, Q::new("www.sub.example.test", A), |m, _| {
        assert_eq!(m.answers(A), vec!["192.0.2.4"]);
    });
    both(&s, Q::new("nope.sub.example.test", A), |m, _| {
        assert_eq!(m.rcode(), NXDOMAIN);
        assert_eq!(m.authority[0].name, "sub.example.test.");
    });
}
