//! A minimal writer of MaxMind DB files (format 2.0, IPv4 tree, 24-bit records), so tests
//! build their own small GeoIP-style databases instead of shipping a vendor's.

/// A data value of the MaxMind DB format.
pub enum V {
    Str(&'static str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, Self)>),
    Arr(Vec<Self>),
}

fn ctrl(out: &mut Vec<u8>, ty: u8, size: usize) {
    assert!(size < 29);
    if ty <= 7 {
        out.push((ty << 5) | size as u8);
    } else {
        out.push(size as u8);
        out.push(ty - 7);
    }
}

fn uint(out: &mut Vec<u8>, ty: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    ctrl(out, ty, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(out: &mut Vec<u8>, v: &V) {
    match v {
        V::Str(s) => {
            ctrl(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        V::U16(n) => uint(out, 5, *n as u64),
        V::U32(n) => uint(out, 6, *n as u64),
        V::U64(n) => uint(out, 9, *n),
        V::Map(kv) => {
            ctrl(out, 7, kv.len());
            for (k, v) in kv {
                encode(out, &V::Str(k));
                encode(out, v);
            }
        }
        V::Arr(items) => {
            ctrl(out, 11, items.len());
            for i in items {
                encode(out, i);
            }
        }
    }
}

/// Writes a database mapping IPv4 networks to records.
pub fn write(path: &std::path::Path, networks: &[([u8; 4], u8, V)]) {
    #[derive(Clone, Copy)]
    enum C {
        Empty,
        Node(u32),
        Data(u32),
    }
    let mut nodes: Vec<[C; 2]> = vec![[C::Empty, C::Empty]];
    let mut data = Vec::new();
    for (net, len, rec) in networks {
        let off = data.len() as u32;
        encode(&mut data, rec);
        let addr = u32::from_be_bytes(*net);
        let mut node = 0usize;
        for depth in 0..*len {
            let bit = ((addr >> (31 - depth)) & 1) as usize;
            if depth + 1 == *len {
                nodes[node][bit] = C::Data(off);
            } else {
                node = match nodes[node][bit] {
                    C::Node(n) => n as usize,
                    _ => {
                        nodes.push([C::Empty, C::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = C::Node(n as u32);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len() as u32;
    let mut out = Vec::new();
    for n in &nodes {
        for c in n {
            let v = match *c {
                C::Empty => count,
                C::Node(i) => i,
                C::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    encode(
        &mut out,
        &V::Map(vec![
            ("binary_format_major_version", V::U16(2)),
            ("binary_format_minor_version", V::U16(0)),
            ("build_epoch", V::U64(1_700_000_000)),
            ("database_type", V::Str("gtmd-test")),
            (
                "description",
                V::Map(vec![("en", V::Str("gtmd test database"))]),
            ),
            ("ip_version", V::U16(4)),
            ("languages", V::Arr(vec![V::Str("en")])),
            ("node_count", V::U32(count)),
            ("record_size", V::U16(24)),
        ]),
    );
    std::fs::write(path, out).unwrap();
}
