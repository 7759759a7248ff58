#!/usr/bin/env python3
"""Writes the seed queries of the `query` and `opt` fuzz targets (dnspython): each file is
one octet (bit 0: TCP; bits 1-2: which client) and a DNS query. Rerun after changing the
target's zone: python3 bench/fuzz/seeds/make.py"""
import hashlib, os, dns.message, dns.edns, dns.flags, dns.rdatatype, dns.tsigkeyring

here = os.path.dirname(os.path.abspath(__file__))
names = ["www", "mx", "srv", "a.wild", "x.wild", "foo.cw", "alias", "loop1", "dangling", "out",
         "sub", "a.sub", "host.dn", "a.b.dn", "x.dnlong", "q.dndeleg", "cdn", "g2", "c2",
         "gtm", "gtmc", "ent", "b.ent", "nope", "@", "www.child", "child"]
types = ["A", "AAAA", "MX", "NS", "SOA", "TXT", "CNAME", "DS", "DNAME", "ANY", "SRV", "TYPE65280"]

def write(target, how, wire):
    d = os.path.join(here, target)
    os.makedirs(d, exist_ok=True)
    data = bytes([how]) + wire
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)

for i, n in enumerate(names):
    fq = "z.test." if n == "@" else n + ".z.test."
    for j, t in enumerate(types):
        q = dns.message.make_query(fq, t, use_edns=(i + j) % 3 != 0, want_dnssec=(i + j) % 4 == 0)
        if (i + j) % 5 == 0:
            q.use_edns(0, options=[dns.edns.ECSOption("198.51.100.0", 24)])
        write("query", (i + j) % 8, q.to_wire())
q = dns.message.make_query("www.z.test.", "A")
q.use_tsig(dns.tsigkeyring.from_text({"k.": "AAAAAAAAAAAAAAAAAAAAAA=="}), keyname="k.")
write("query", 0, q.to_wire())
for t in ["AXFR", "IXFR"]:
    write("query", 1, dns.message.make_query("z.test.", t).to_wire())
q = dns.message.make_query("www.z.test.", "A"); q.set_opcode(dns.opcode.NOTIFY)
write("query", 0, q.to_wire())
# The `opt` target: OPT RDATA alone (options: ECS v4/v6/mapped, cookie, NSID, unknown).
opts = [
    dns.edns.ECSOption("198.51.100.0", 24), dns.edns.ECSOption("2001:db8:100::", 56),
    dns.edns.ECSOption("::ffff:198.51.100.0", 120), dns.edns.ECSOption("0.0.0.0", 0),
    dns.edns.GenericOption(10, b"\x01\x02\x03\x04\x05\x06\x07\x08"),
    dns.edns.GenericOption(3, b""), dns.edns.GenericOption(65001, b"xyz"),
]
for k, o in enumerate(opts):
    w = o.to_wire()
    write("opt", k % 8, o.otype.to_bytes(2, "big") + len(w).to_bytes(2, "big") + w)
