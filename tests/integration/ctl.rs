//! Issue 13 item 3 through the real binary: `gtmd ctl` against a running gtmd (status,
//! state, stats, reload, timed overrides, enable and disable), its text and JSON output
//! and its exit codes (0 done, 1 refused, 2 unreachable); the API's timed override that
//! ends on its own and survives a restart.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crud::Lab;
use crate::harness::*;

/// `gtmd ctl ARGS` against `lab` with the test token: exit code, stdout, stderr.
fn ctl(lab: &Lab, args: &[&str]) -> (i32, String, String) {
    ctl_at(&format!("http://{}", lab.control), true, args)
}

fn ctl_at(server: &str, token: bool, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.arg("ctl").args(["--server", server]);
    if token {
        c.arg("--token-file").arg(test_token_file());
    }
    let out = c.args(args).env_remove("GTMD_TOKEN").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// status, state, stats and reload: text by default, the API's JSON with --json, exit 0.
#[test]
fn reads_and_reload() {
    let lab = Lab::start();
    for _ in 0..5 {
        lab.ask("www.example.test");
    }
    let (code, out, err) = ctl(&lab, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("gtmd 0.1.0, up "), "{out}");
    assert!(
        out.contains("generation   1\n") && out.contains("last reload  none since start"),
        "{out}"
    );
    assert!(
        out.contains(&format!("config file  {}", lab.config().display())),
        "{out}"
    );
    let (code, out, _) = ctl(&lab, &["stats", "--json"]);
    assert_eq!(code, 0);
    let stats = json_of(&out);
    assert!(stats["queries"].as_u64().unwrap() >= 5, "{stats}");
    assert_eq!(stats["qtype"]["A"], stats["rcode"]["NOERROR"], "{stats}");
    let (code, out, _) = ctl(&lab, &["stats"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("queries    ") && out.contains("qtype      A "),
        "{out}"
    );
    let (code, out, _) = ctl(&lab, &["state"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("ADDRESS") && out.contains("a1") && out.contains("www.example.test."),
        "{out}"
    );
    let (code, out, _) = ctl(&lab, &["state", "P1"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("POOL") && !out.contains("a2 "), "{out}");
    let (code, _, err) = ctl(&lab, &["state", "nothing-of-that-name"]);
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = ctl(&lab, &["reload"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "reloaded: generation 2\n"),
        "{err}"
    );
    let (code, out, _) = ctl(&lab, &["--json", "status"]);
    assert_eq!(code, 0);
    let st = json_of(&out);
    assert_eq!(st["generation"], 2);
    assert_eq!(st["last_reload"]["trigger"], "api");
    assert_eq!(st["last_reload"]["ok"], true);
    // A broken file: exit 1 with the error's place; the old configuration serves on.
    let good = lab.text();
    std::fs::write(
        lab.config(),
        good.replace("pools = [\"P1\"]", "pools = [\"P7\"]"),
    )
    .unwrap();
    let (code, out, err) = ctl(&lab, &["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("422")
            && err.contains(&format!("{}:", lab.config().display()))
            && err.contains("P7"),
        "{err}"
    );
    assert_eq!(lab.ask("www.example.test"), ["192.0.2.1"]);
    let (_, out, _) = ctl(&lab, &["status"]);
    assert!(
        out.contains("last reload  REJECTED (api), generation 2"),
        "{out}"
    );
    // SIGHUP is recorded the same way.
    std::fs::write(lab.config(), &good).unwrap();
    lab.s.signal(libc::SIGHUP);
    let t0 = Instant::now();
    loop {
        let (_, out, _) = ctl(&lab, &["--json", "status"]);
        let st = json_of(&out);
        if st["generation"] == 3 {
            assert_eq!(st["last_reload"]["trigger"], "SIGHUP", "{st}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no reload on SIGHUP: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Exit codes: 1 without a token for a change, or for an unknown address; 2 when nothing
/// listens.
#[test]
fn exit_codes() {
    let lab = Lab::start();
    let server = format!("http://{}", lab.control);
    let (code, _, err) = ctl_at(&server, false, &["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = ctl(&lab, &["override", "no-such-address", "down"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.contains("no-such-address"),
        "{err}"
    );
    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = ctl_at(&nobody, true, &["status"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, _) = ctl(&lab, &["override", "a1", "sideways"]);
    assert_eq!(code, 2, "clap's usage error");
}

/// enable/disable an access domain: the answer follows.
#[test]
fn enable_and_disable() {
    let lab = Lab::start();
    let (code, out, err) = ctl(&lab, &["disable", "www.example.test."]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("www.example.test. A: disabled\ngeneration 2 serving"),
        "{out}"
    );
    assert_eq!(lab.ask("www.example.test"), ["NXDOMAIN"]);
    assert!(lab.text().contains("enabled = false"));
    let (code, out, _) = ctl(&lab, &["enable", "www.example.test", "A"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("www.example.test. A: enabled"), "{out}");
    assert_eq!(lab.ask("www.example.test"), ["192.0.2.1"]);
    let (code, _, err) = ctl(&lab, &["enable", "nothing.example.test."]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
}

/// `override --for`: the address is down for the time given, then back to its configured
/// mode on its own; the end time is in the state file and survives a restart.
#[test]
fn timed_overrides_end_and_persist() {
    let mut lab = Lab::start();
    let both = serde_json::json!({"addresses": ["a1", "a2"]});
    let (st, doc, _) = lab.call("PATCH", "/v1/pools/P1", Some(both));
    assert_eq!(st, 200, "{doc}");
    assert_eq!(lab.ask("www.example.test"), ["192.0.2.1", "192.0.2.2"]);
    let (code, out, err) = ctl(&lab, &["override", "a1", "down", "--for", "2s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("a1: down for 2s"), "{out}");
    let t0 = Instant::now();
    assert_eq!(lab.ask("www.example.test"), ["192.0.2.2"]);
    let (_, out, _) = ctl(&lab, &["state", "a1"]);
    assert!(out.contains(" down ") || out.contains("down ("), "{out}");
    assert!(out.contains("left)"), "{out}");
    let state_file = lab.dir.join("state.json");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(saved["overrides"]["a1"], "down");
    assert!(saved["expires"]["a1"].as_u64().is_some(), "{saved}");
    lab.s
        .wait_log("operator override expired", Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let (_, out, _) = ctl(&lab, &["--json", "state"]);
    let a1 = &json_of(&out)["addresses"][0];
    assert!(a1["override"].is_null() && a1["up"] == true, "{a1}");
    assert_eq!(lab.ask("www.example.test"), ["192.0.2.1", "192.0.2.2"]);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert!(
        saved["overrides"].as_object().unwrap().is_empty(),
        "{saved}"
    );
    // A longer one survives a restart, with its end time.
    let (code, _, _) = ctl(&lab, &["override", "a2", "down", "--for", "10m"]);
    assert_eq!(code, 0);
    let (_, out, _) = ctl(&lab, &["--json", "state"]);
    let until = json_of(&out)["addresses"][1]["override_expires_unix_ms"]
        .as_u64()
        .unwrap();
    lab.restart();
    let (_, out, _) = ctl(&lab, &["--json", "state"]);
    let a2 = &json_of(&out)["addresses"][1];
    assert_eq!(a2["override"], "down");
    assert_eq!(a2["override_expires_unix_ms"].as_u64(), Some(until));
    // A bad duration is refused.
    let (code, _, err) = ctl(&lab, &["override", "a2", "up", "--for", "soon"]);
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("soon"), "{err}");
}

/// An HTTPS API: `gtmd ctl` verifies its certificate against --ca-file; without one (the
/// system's roots do not know a self-signed certificate) it cannot talk to it (exit 2).
#[test]
fn https_api() {
    use std::os::unix::fs::PermissionsExt;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let lab = Lab::start_with(|dir, text| {
        std::fs::write(dir.join("api.crt"), cert.cert.pem()).unwrap();
        let key = dir.join("api.key");
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        text.replace(
            "[control]\n",
            "[control]\ntls-cert = \"api.crt\"\ntls-key = \"api.key\"\n",
        )
    });
    let server = format!("https://localhost:{}", lab.control.port());
    let crt = lab.dir.join("api.crt");
    let crt = crt.to_str().unwrap();
    let (code, out, err) = ctl_at(
        &server,
        true,
        &["--ca-file", crt, "disable", "www.example.test."],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("www.example.test. A: disabled"), "{out}");
    assert_eq!(lab.ask("www.example.test"), ["NXDOMAIN"]);
    let (code, out, _) = ctl_at(&server, true, &["--ca-file", crt, "--json", "status"]);
    assert_eq!(code, 0);
    assert_eq!(json_of(&out)["generation"], 2);
    let (code, _, err) = ctl_at(&server, true, &["status"]);
    assert_eq!(code, 2, "{err}");
    let plain = format!("http://localhost:{}", lab.control.port());
    let (code, _, err) = ctl_at(&plain, true, &["status"]);
    assert_eq!(code, 2, "plain HTTP to an HTTPS API: {err}");
    assert!(err.contains("https://"), "{err}");
}
