//! The bytes of the query log: dnstap messages (the protobuf schema `dnstap.proto`, the
//! few fields an authoritative server fills, encoded by hand: varints, fixed32 and
//! length-delimited fields) and Frame Streams framing (data frames, and the control frames
//! of the handshake: READY, ACCEPT, START, STOP, FINISH with the content type).

use crate::shard::tap::Slot;

/// The content type dnstap readers accept.
pub(super) const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

/// Frame Streams control frame types.
pub(super) const ACCEPT: u32 = 1;
/// See [`ACCEPT`].
pub(super) const START: u32 = 2;
/// See [`ACCEPT`].
pub(super) const STOP: u32 = 3;
/// See [`ACCEPT`].
pub(super) const READY: u32 = 4;
/// See [`ACCEPT`].
pub(super) const FINISH: u32 = 5;
/// The control field that carries a content type.
const FIELD_CONTENT_TYPE: u32 = 1;

/// `Message.Type` values gtmd logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A query received (AUTH_QUERY = 1).
    Query = 1,
    /// A response sent (AUTH_RESPONSE = 2).
    Response = 2,
}

/// A control frame: the escape (a zero length), the frame's length, its type and, unless
/// it is FINISH or STOP, the content type.
pub(super) fn control(kind: u32) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if kind != FINISH && kind != STOP {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut f = 0u32.to_be_bytes().to_vec();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// The type of a control frame's body (the octets after the escape and the length), if it
/// offers our content type or names none (STOP, FINISH).
pub(super) fn parse_control(body: &[u8]) -> Option<u32> {
    let kind = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    let mut rest = &body[4..];
    if rest.is_empty() {
        return Some(kind);
    }
    while rest.len() >= 8 {
        let field = u32::from_be_bytes(rest[..4].try_into().ok()?);
        let len = u32::from_be_bytes(rest[4..8].try_into().ok()?) as usize;
        let value = rest.get(8..8 + len)?;
        if field == FIELD_CONTENT_TYPE && value == CONTENT_TYPE {
            return Some(kind);
        }
        rest = &rest[8 + len..];
    }
    None
}

/// Reused buffers for encoding.
#[derive(Debug, Default)]
pub(super) struct Encoder {
    message: Vec<u8>,
    dnstap: Vec<u8>,
}

/// What every message carries besides the query.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    /// `Dnstap.identity` (empty: left out).
    pub(super) identity: Vec<u8>,
    /// `Dnstap.version` (empty: left out).
    pub(super) version: Vec<u8>,
    /// AUTH_RESPONSE carries the query too.
    pub(super) responses_with_queries: bool,
}

impl Encoder {
    /// Appends the data frame (length, then the `Dnstap` message) of `slot` as `kind` to
    /// `out`.
    pub(super) fn frame(&mut self, meta: &Meta, slot: &Slot, kind: Kind, out: &mut Vec<u8>) {
        let m = &mut self.message;
        m.clear();
        varint_field(m, 1, kind as u64);
        varint_field(m, 2, if slot.v6 { 2 } else { 1 }); // INET6 : INET
        varint_field(m, 3, if slot.tcp { 2 } else { 1 }); // TCP : UDP
        let addr = if slot.v6 {
            &slot.addr[..]
        } else {
            &slot.addr[..4]
        };
        bytes_field(m, 4, addr);
        varint_field(m, 6, u64::from(slot.port));
        if kind == Kind::Query || meta.responses_with_queries {
            varint_field(m, 8, slot.sec);
            fixed32_field(m, 9, slot.nsec);
            bytes_field(m, 10, slot.query());
        }
        if kind == Kind::Response {
            varint_field(m, 12, slot.sec);
            fixed32_field(m, 13, slot.nsec);
            bytes_field(m, 14, slot.response());
        }
        let d = &mut self.dnstap;
        d.clear();
        if !meta.identity.is_empty() {
            bytes_field(d, 1, &meta.identity);
        }
        if !meta.version.is_empty() {
            bytes_field(d, 2, &meta.version);
        }
        bytes_field(d, 14, &self.message);
        varint_field(d, 15, 1); // Dnstap.Type MESSAGE
        out.extend_from_slice(&(d.len() as u32).to_be_bytes());
        out.extend_from_slice(d);
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn fixed32_field(out: &mut Vec<u8>, field: u64, v: u32) {
    varint(out, field << 3 | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes_field(out: &mut Vec<u8>, field: u64, v: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_control_frames() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        let ready = control(READY);
        assert_eq!(&ready[..4], &[0, 0, 0, 0]);
        assert_eq!(ready.len(), 8 + 4 + 8 + CONTENT_TYPE.len());
        assert_eq!(parse_control(&ready[8..]), Some(READY));
        assert_eq!(control(STOP), [0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]);
        assert_eq!(parse_control(&control(FINISH)[8..]), Some(FINISH));
        let mut other = ACCEPT.to_be_bytes().to_vec();
        other.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 3, b'x', b'y', b'z']);
        assert_eq!(parse_control(&other), None);
    }

    /// The bytes of one AUTH_QUERY message, field by field.
    #[test]
    fn message_fields() {
        let ring = std::sync::Arc::new(crate::shard::tap::Ring::new(0, 1, 16).unwrap());
        let all = crate::shard::tap::Logged {
            queries: true,
            responses: true,
            responses_with_queries: false,
        };
        let mut tap = crate::shard::tap::Tap::new(ring.clone(), 1, all);
        let peer: std::net::SocketAddr = "192.0.2.7:53000".parse().unwrap();
        tap.offer(
            false,
            crate::shard::tap::Peer::Addr(&peer),
            &[0xAB, 0xCD],
            &[0xEF],
        );
        let mut s = ring.pop().unwrap();
        (s.sec, s.nsec) = (1, 2);
        let meta = Meta {
            identity: b"id".to_vec(),
            version: Vec::new(),
            responses_with_queries: false,
        };
        let mut out = Vec::new();
        Encoder::default().frame(&meta, &s, Kind::Query, &mut out);
        let msg = [
            0x08, 1, 0x10, 1, 0x18, 1, 0x22, 4, 192, 0, 2, 7, 0x30, 0x88, 0x9E, 0x03, 0x40, 1,
            0x4D, 2, 0, 0, 0, 0x52, 2, 0xAB, 0xCD,
        ];
        let mut want = vec![0x0A, 2, b'i', b'd', 0x72, msg.len() as u8];
        want.extend_from_slice(&msg);
        want.extend_from_slice(&[0x78, 1]);
        assert_eq!(&out[4..], &want[..]);
        assert_eq!(&out[..4], &(want.len() as u32).to_be_bytes());
        out.clear();
        Encoder::default().frame(&meta, &s, Kind::Response, &mut out);
        assert!(out.ends_with(&[0x60, 1, 0x6D, 2, 0, 0, 0, 0x72, 1, 0xEF, 0x78, 1]));
    }
}
