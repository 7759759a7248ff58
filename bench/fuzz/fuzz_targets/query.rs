//! Fuzz target: any octets as a query (over UDP or TCP, from some client) to a snapshot
//! with every kind of answer (wildcards, delegations, DS, DNAME, CNAME chains into access
//! domains, a CNAME access domain, nearest lines by ECS). The answer path must not panic,
//! must stay within the transport's buffer, and every reply must be a well-formed DNS
//! message whose records all parse.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&how, pkt)) = data.split_first() {
        shared::answer(how, pkt);
    }
});
