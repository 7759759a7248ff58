//! Fuzz target: any octets as the RDATA of a query's OPT record (EDNS options: ECS,
//! cookies, NSID, unknown ones), on a query for a scheduled name whose answer depends on
//! the ECS subnet, and on a static one. Checks as the `query` target.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&how, rdata)) = data.split_first() else {
        return;
    };
    let Ok(rdlen) = u16::try_from(rdata.len()) else {
        return;
    };
    let name: &[u8] = if how & 8 == 0 { b"\x03gtm\x01z\x04test\x00" } else { b"\x03www\x01z\x04test\x00" };
    let mut pkt = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    pkt.extend_from_slice(name);
    pkt.extend_from_slice(&[0, 1, 0, 1]); // A IN
    pkt.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, if how & 16 == 0 { 0 } else { 0x80 }, 0]);
    pkt.extend_from_slice(&rdlen.to_be_bytes());
    pkt.extend_from_slice(rdata);
    shared::answer(how, &pkt);
});
