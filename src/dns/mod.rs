//! The leaf below every other module: DNS numbers and wire names, as the protocol defines
//! them (NLnet Labs `domain` keeps these in `base::iana`). Record types, classes, RCODEs,
//! EDNS option codes, the header length; [`name`]: the lowercased uncompressed wire names
//! the compiler and the hot path share; [`cookie`]: the server secret of RFC 9018. It
//! imports nothing of the crate, so every module may import it.

pub mod cookie;
pub mod name;

/// DNS header length.
pub const HEADER_LEN: usize = 12;
/// Record type numbers gtmd needs by name.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Host information (RFC 8482 synthesised ANY answer).
    pub const HINFO: u16 = 13;
    /// Domain name pointer.
    pub const PTR: u16 = 12;
    /// Mail exchange.
    pub const MX: u16 = 15;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service location.
    pub const SRV: u16 = 33;
    /// Delegation of a subtree (RFC 6672).
    pub const DNAME: u16 = 39;
    /// Delegation signer.
    pub const DS: u16 = 43;
    /// EDNS pseudo-record.
    pub const OPT: u16 = 41;
    /// Transaction signature (RFC 8945).
    pub const TSIG: u16 = 250;
    /// Zone transfer (refused: gtmd does not serve transfers).
    pub const AXFR: u16 = 252;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Any type.
    pub const ANY: u16 = 255;
}
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Class CH (chaos).
pub const CLASS_CH: u16 = 3;
/// QCLASS * (any class).
pub const CLASS_ANY: u16 = 255;
/// EDNS option code of EDNS Client Subnet (RFC 7871).
pub const OPT_ECS: u16 = 8;
/// EDNS option code of the Name Server Identifier (RFC 5001).
pub const OPT_NSID: u16 = 3;
/// EDNS option code of DNS Cookies (RFC 7873).
pub const OPT_COOKIE: u16 = 10;

/// RCODE values.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name error.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Not authoritative / not authorized (RFC 8945: with a TSIG error).
    pub const NOTAUTH: u16 = 9;
    /// Bad EDNS version (extended).
    pub const BADVERS: u16 = 16;
    /// Bad or missing server cookie (extended; RFC 7873).
    pub const BADCOOKIE: u16 = 23;
}
