//! `gtmd-xdpload` (bench/xdpload.rs, the AF_XDP load generator of `SENDER=xdp bench/xdp`)
//! against gtmd over XDP on a veth pair of the xdp tests' namespace (root only; skipped
//! with a message otherwise): open loop at a modest rate, then closed loop, each counting
//! answers that gtmd's own counters confirm; the generator leaves no program on its
//! interface. And its error for an interface that does not exist (any user).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use crate::xdp::{available, ip, ns, zones_server, Veth};

const XDPLOAD: &str = env!("CARGO_BIN_EXE_gtmd-xdpload");

/// Runs gtmd-xdpload from `veth`'s namespace end against `server` with `args` (bounded by
/// `timeout`); checks that it succeeded without a panic and returns its last line's
/// `key=value` pairs.
fn xdpload(veth: &Veth, server: SocketAddr, args: &[&str]) -> HashMap<String, u64> {
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.root)).unwrap();
    let out = Command::new("timeout")
        .args(["20", "ip", "netns", "exec", ns(), XDPLOAD, "--interface"])
        .args([
            &veth.peer,
            "--server",
            &server.to_string(),
            "--dst-mac",
            mac.trim(),
        ])
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("socket copy need_wakeup=true"), "{stderr}");
    let last = stdout.lines().last().unwrap_or("");
    let kv: HashMap<String, u64> = last
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    for k in ["sent", "answered", "lost", "qps", "unmatched"] {
        assert!(kv.contains_key(k), "no {k}= in {last:?}");
    }
    kv
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A log line's `key=N`.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// About 1 s at 5,000 qps open loop, then 0.5 s with 8 in flight: answers counted, no more
/// than were sent, none unmatched; gtmd's AF_XDP socket answered at least what the
/// generator counted and received no more than it sent; no program left on the
/// generator's end.
#[test]
fn xdpload_drives_gtmd_over_xdp() {
    if !available() {
        return;
    }
    let veth = Veth::new();
    let mut s = zones_server("xdpload.toml", &veth, "", false);
    let open = xdpload(&veth, s.addr, &["--secs", "1", "--rate", "5000"]);
    assert!(
        open["answered"] > 0 && open["answered"] <= open["sent"],
        "{open:?}"
    );
    assert!((4500..=5000).contains(&open["sent"]), "the rate: {open:?}");
    assert_eq!(open["unmatched"], 0, "{open:?}");
    let closed = xdpload(&veth, s.addr, &["--secs", "0.5", "--inflight", "8"]);
    assert!(
        closed["answered"] > 0 && closed["answered"] <= closed["sent"],
        "{closed:?}"
    );
    // At most the window is unanswered at the end.
    assert!(
        closed["sent"] - closed["answered"] - closed["lost"] <= 8,
        "{closed:?}"
    );
    assert!(
        !ip(&["-n", ns(), "link", "show", "dev", &veth.peer]).contains("xdp"),
        "the generator's program is detached when it exits"
    );
    s.stop();
    let line = s.wait_log("xdp: AF_XDP socket closed", Duration::from_secs(1));
    assert!(
        field(&line, "answered") >= open["answered"] + closed["answered"],
        "{line} {open:?} {closed:?}"
    );
    assert!(
        field(&line, "received") <= open["sent"] + closed["sent"],
        "{line} {open:?} {closed:?}"
    );
}

/// An interface that does not exist: a one-line error and exit status 1 (any user).
#[test]
fn xdpload_names_a_missing_interface() {
    let out = Command::new(XDPLOAD)
        .args(["--interface", "gtmd-nope0", "--server", "127.0.0.1:5300"])
        .args(["--dst-mac", "02:00:00:00:00:01", "--secs", "1"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "gtmd-xdpload: --interface gtmd-nope0: no such interface here"
    );
}
