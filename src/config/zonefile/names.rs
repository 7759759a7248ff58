//! Mnemonics: record types (the ones Knot DNS 3.2 reads, plus `TYPEnn` for any), classes
//! (`IN`, `CLASSnn`), DNSSEC algorithms and certificate types (RFC 4398).

use super::text;

/// Record types known by name, as Knot DNS 3.2 reads them; any other is `TYPEnn`.
const TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("HINFO", 13),
    ("MINFO", 14),
    ("MX", 15),
    ("TXT", 16),
    ("RP", 17),
    ("AFSDB", 18),
    ("RT", 21),
    ("KEY", 25),
    ("AAAA", 28),
    ("LOC", 29),
    ("SRV", 33),
    ("NAPTR", 35),
    ("KX", 36),
    ("CERT", 37),
    ("DNAME", 39),
    ("APL", 42),
    ("DS", 43),
    ("SSHFP", 44),
    ("IPSECKEY", 45),
    ("RRSIG", 46),
    ("NSEC", 47),
    ("DNSKEY", 48),
    ("DHCID", 49),
    ("NSEC3", 50),
    ("NSEC3PARAM", 51),
    ("TLSA", 52),
    ("SMIMEA", 53),
    ("CDS", 59),
    ("CDNSKEY", 60),
    ("OPENPGPKEY", 61),
    ("CSYNC", 62),
    ("ZONEMD", 63),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("SPF", 99),
    ("NID", 104),
    ("L32", 105),
    ("L64", 106),
    ("LP", 107),
    ("EUI48", 108),
    ("EUI64", 109),
    ("URI", 256),
    ("CAA", 257),
];

/// `NAME` or `PREFIXnn` (`TYPE65280`, `CLASS1`), case-insensitive, from a table.
fn lookup(raw: &[u8], table: &[(&str, u16)], prefix: Option<&str>) -> Option<u16> {
    if let Some(&(_, v)) = table
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(raw))
    {
        return Some(v);
    }
    let prefix = prefix?;
    let p = prefix.len();
    if raw.len() > p && raw[..p].eq_ignore_ascii_case(prefix.as_bytes()) {
        return text::number(&raw[p..], 65535).ok().map(|v| v as u16);
    }
    None
}

/// A record type mnemonic or `TYPEnn`.
pub(crate) fn rtype(raw: &[u8]) -> Option<u16> {
    lookup(raw, TYPES, Some("TYPE"))
}

/// The presentation name of a type: its mnemonic or `TYPEnn`.
pub(crate) fn rtype_name(t: u16) -> String {
    TYPES
        .iter()
        .find(|&&(_, v)| v == t)
        .map_or_else(|| format!("TYPE{t}"), |(n, _)| (*n).to_string())
}

/// Types that are not data: OPT and the query and meta range 128..=255 (RFC 6895 3.1:
/// TKEY, TSIG, IXFR, AXFR, MAILB, MAILA, ANY), and the reserved type 0.
pub(crate) fn is_meta(t: u16) -> bool {
    t == 0 || t == 41 || (128..=255).contains(&t)
}

const CLASSES: &[(&str, u16)] = &[
    ("IN", 1),
    ("CS", 2),
    ("CH", 3),
    ("HS", 4),
    ("NONE", 254),
    ("ANY", 255),
];

/// A class mnemonic or `CLASSnn`.
pub(crate) fn class(raw: &[u8]) -> Option<u16> {
    lookup(raw, CLASSES, Some("CLASS"))
}

/// DNSSEC algorithm mnemonics (RFC 4034 A.1 and the IANA registry, as Knot DNS reads them).
const ALGORITHMS: &[(&str, u16)] = &[
    ("RSAMD5", 1),
    ("DH", 2),
    ("DSA", 3),
    ("RSASHA1", 5),
    ("DSA-NSEC3-SHA1", 6),
    ("RSASHA1-NSEC3-SHA1", 7),
    ("RSASHA256", 8),
    ("RSASHA512", 10),
    ("ECC-GOST", 12),
    ("ECDSAP256SHA256", 13),
    ("ECDSAP384SHA384", 14),
    ("ED25519", 15),
    ("ED448", 16),
    ("INDIRECT", 252),
    ("PRIVATEDNS", 253),
    ("PRIVATEOID", 254),
];

/// A DNSSEC algorithm: a number 0..=255 or its mnemonic.
pub(crate) fn algorithm(raw: &[u8]) -> Result<u8, text::Problem> {
    if raw.first().is_some_and(u8::is_ascii_digit) {
        return text::number(raw, 255).map(|v| v as u8);
    }
    lookup(raw, ALGORITHMS, None)
        .map(|v| v as u8)
        .ok_or_else(|| "not a number or an algorithm name (e.g. ECDSAP256SHA256)".into())
}

/// Certificate types (RFC 4398 2.1).
const CERT_TYPES: &[(&str, u16)] = &[
    ("PKIX", 1),
    ("SPKI", 2),
    ("PGP", 3),
    ("IPKIX", 4),
    ("ISPKI", 5),
    ("IPGP", 6),
    ("ACPKIX", 7),
    ("IACPKIX", 8),
    ("URI", 253),
    ("OID", 254),
];

/// A certificate type: a number 0..=65535 or its mnemonic.
pub(crate) fn cert_type(raw: &[u8]) -> Result<u16, text::Problem> {
    if raw.first().is_some_and(u8::is_ascii_digit) {
        return text::number(raw, 65535).map(|v| v as u16);
    }
    lookup(raw, CERT_TYPES, None)
        .ok_or_else(|| "not a number or a certificate type name (e.g. PKIX)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics() {
        assert_eq!(rtype(b"a"), Some(1));
        assert_eq!(rtype(b"Nsec3Param"), Some(51));
        assert_eq!(rtype(b"TYPE65535"), Some(65535));
        assert_eq!(rtype(b"type1"), Some(1));
        assert_eq!(rtype(b"TYPE65536"), None);
        assert_eq!(rtype(b"TYPE"), None);
        assert_eq!(rtype(b"NULL"), None);
        assert_eq!(rtype_name(99), "SPF");
        assert_eq!(rtype_name(65280), "TYPE65280");
        assert_eq!(class(b"in"), Some(1));
        assert_eq!(class(b"CLASS1"), Some(1));
        assert_eq!(class(b"CH"), Some(3));
        assert_eq!(class(b"A"), None);
        assert_eq!(algorithm(b"ecdsap256sha256"), Ok(13));
        assert_eq!(algorithm(b"253"), Ok(253));
        assert!(algorithm(b"256").is_err());
        assert!(algorithm(b"RSA").is_err());
        assert_eq!(cert_type(b"pgp"), Ok(3));
        assert_eq!(cert_type(b"65535"), Ok(65535));
        assert!(is_meta(255) && is_meta(41) && !is_meta(256) && !is_meta(1));
    }
}
