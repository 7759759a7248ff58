//! The command line: `check` on every invalid-config fixture (each with the exact error it
//! must print), `check` on valid configs, `--help`, `--version`, start-up failures.

use std::process::Command;

use crate::harness::{fixture, TempDir, BIN};

/// `tests/fixtures/bad/NAME.toml` must fail `gtmd check` with exit 1 and print exactly
/// `NAME.err`. Run from that folder so paths in messages are as a user typed them.
#[test]
fn check_rejects_each_bad_config_with_its_exact_error() {
    let dir = fixture("bad");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let want = std::fs::read_to_string(path.with_extension("err")).unwrap();
        let out = Command::new(BIN)
            .current_dir(&dir)
            .args(["check", "--config", name])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: exit code");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            want,
            "{name}: message"
        );
        assert!(
            want.starts_with(&format!("{name}:"))
                || want.contains(".zone:")
                || want.starts_with("included/"),
            "{name}: file:line first"
        );
        n += 1;
    }
    assert!(n >= 15, "at least 15 kinds of mistakes, found {n}");
}

#[test]
fn check_accepts_valid_configs() {
    {
        let cfg = fixture("zones.toml");
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            cfg.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (2 zones)"));
    }
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for e in std::fs::read_dir(examples).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = Command::new(BIN)
                .args(["check", "--config"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let out = Command::new(BIN).arg("check").output().unwrap();
    assert!(out.status.success(), "embedded default");
    assert!(String::from_utf8_lossy(&out.stdout).contains("<embedded default>: ok (1 zones)"));
}

#[test]
fn embedded_default_round_trips() {
    let out = Command::new(BIN).arg("default-config").output().unwrap();
    assert!(out.status.success());
    let dir = TempDir::new("cli");
    let p = dir.join("default.toml");
    std::fs::write(&p, &out.stdout).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for want in ["run", "check", "default-config"] {
        assert!(text.contains(want), "--help lists {want}");
    }
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--config",
        "--listen",
        "--io",
        "--shards",
        "SIGHUP",
        "example.test",
    ] {
        assert!(text.contains(want), "run --help explains {want}");
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("gtmd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn run_fails_fast_on_bad_config_and_busy_port() {
    let out = Command::new(BIN)
        .current_dir(fixture("bad"))
        .args([
            "run",
            "--config",
            "unknown-io.toml",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown-io.toml:3: server.io: 'epoll'"));
    // a port held by a socket without SO_REUSEPORT cannot be joined
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["run", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot bind udp {addr}")));
}

/// `server.shards` is checked against the CPUs the process may run on (its affinity mask),
/// not against the count of CPUs: under `taskset -c 1`, CPU 1 is fine and CPU 0 is not.
#[test]
fn shard_cpus_follow_the_affinity_mask() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let dir = TempDir::new("affinity");
    let check = |cpu: usize| {
        let cfg = dir.join(format!("cpu{cpu}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "version = 1\n[server]\nshards = [{cpu}]\n[[zone]]\nname = \"example.test.\"\n\
                 soa = {{ mname = \"ns1\", rname = \"hostmaster\" }}\nns = [\"ns1\"]\n\
                 records = [\"ns1 A 192.0.2.1\"]\n"
            ),
        )
        .unwrap();
        Command::new("taskset")
            .args(["-c", "1", BIN, "check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let ok = check(1);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = check(0);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("server.shards: '0' is not a CPU this process may run on (here: 1)"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
