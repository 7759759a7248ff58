//! `[log]`: text lines with unambiguous values, JSON lines, the level from the file or
//! `RUST_LOG`, sd-daemon priorities without time stamps when stderr is the journal's
//! stream, and a format change at reload. gtmd runs with its stderr in a file here (the
//! journal case needs a file whose device and inode the test knows).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, udp_exchange, TempDir, BIN, Q};

const ZONE: &str = r#"
[[zone]]
name = "example.test."
soa = { mname = "ns1", rname = "hostmaster" }
ns = ["ns1"]
records = ["ns1 A 192.0.2.1", "www A 192.0.2.10"]
"#;

/// gtmd with stderr in `dir/stderr`, on a free port, control API off.
struct Proc {
    child: Child,
    err: PathBuf,
    port: u16,
}

impl Proc {
    /// Starts gtmd on `cfg`; `env` is set (`RUST_LOG` is removed unless given there);
    /// with `journal`, `JOURNAL_STREAM` names the stderr file (or, with `Some(false)`,
    /// another file).
    fn start(dir: &TempDir, cfg: &Path, env: &[(&str, &str)], journal: Option<bool>) -> Self {
        use std::os::unix::fs::MetadataExt;
        let err = dir.join("stderr");
        let file = std::fs::File::create(&err).unwrap();
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(cfg)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--control", "off"])
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(same) = journal {
            let m = if same {
                std::fs::metadata(&err).unwrap()
            } else {
                std::fs::metadata(cfg).unwrap()
            };
            cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        }
        let child = cmd.spawn().unwrap();
        let p = Self { child, err, port };
        p.until_answering();
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap()
    }

    /// Waits until a line of the log satisfies `f`; returns it.
    fn wait_line(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.log().lines().find(|l| f(l)) {
                return l.to_string();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no line {what} in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until gtmd answers a query (the only sign of readiness at level warn).
    fn until_answering(&self) {
        let q = Q::new("www.example.test", 1).build();
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let t0 = Instant::now();
        while udp_exchange(addr, &q, Duration::from_millis(100)).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "gtmd does not answer; log:\n{}",
                self.log()
            );
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM, then waits for the exit (bounded); returns the whole log.
    fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                panic!("gtmd did not stop within 5 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.log()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Text: a value with a space is quoted (the config path), string fields are quoted, plain
/// values are not; every line starts with an RFC 3339 time stamp.
#[test]
fn text_values_are_unambiguous() {
    let dir = TempDir::new("log-text");
    std::fs::create_dir(dir.join("my configs")).unwrap();
    let cfg = dir.join("my configs/gtmd.toml");
    std::fs::write(&cfg, format!("version = 1\n{ZONE}")).unwrap();
    let p = Proc::start(&dir, &cfg, &[("RUST_LOG", "info")], None);
    let line = p.wait_line("configuration compiled", |l| {
        l.contains("configuration compiled")
    });
    let want = format!("config={:?}", cfg.display().to_string());
    assert!(line.contains(&want), "{want} in {line}");
    assert!(line.contains(" generation=1 "), "{line}");
    let line = p.wait_line("shard starting", |l| l.contains("shard starting"));
    assert!(line.contains("io=\"mmsg\""), "{line}");
    let log = p.stop();
    for l in log.lines() {
        let ts = l.split_whitespace().next().unwrap_or("");
        assert!(
            ts.len() > 20 && ts.starts_with("20") && ts.ends_with('Z'),
            "time stamp first: {l}"
        );
    }
    assert!(log.contains("shutdown summary"), "{log}");
}

/// JSON: every line, from the first, is one object with time stamp, level, target and
/// message, fields beside them; a reload back to text switches the lines that follow.
#[test]
fn json_lines_and_format_change_at_reload() {
    let dir = TempDir::new("log-json");
    let cfg = dir.join("gtmd.toml");
    let json = format!("version = 1\n[log]\nformat = \"json\"\n{ZONE}");
    std::fs::write(&cfg, &json).unwrap();
    let p = Proc::start(&dir, &cfg, &[], None);
    let ready = p.wait_line("ready", |l| l.contains("\"ready\""));
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(v["level"], "INFO", "{ready}");
    assert_eq!(v["message"], "ready", "{ready}");
    assert_eq!(v["target"], "gtmd::control", "{ready}");
    assert!(v["shards"].as_u64().is_some(), "{ready}");
    assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let listening = p.wait_line("listening", |l| l.contains("\"listening\""));
    let v: serde_json::Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(v["udp"], format!("127.0.0.1:{}", p.port), "{listening}");
    // Back to text at a reload: said in JSON, text from then on.
    std::fs::write(&cfg, format!("version = 1\n{ZONE}")).unwrap();
    p.signal(libc::SIGHUP);
    p.wait_line("the change", |l| l.contains("reload: [log] applied"));
    p.wait_line("a text line after it", |l| {
        l.contains("INFO gtmd::probe: prober reloaded")
    });
    let log = p.stop();
    let lines: Vec<&str> = log.lines().collect();
    let applied = lines
        .iter()
        .position(|l| l.contains("reload: [log] applied"))
        .unwrap_or_else(|| panic!("the change is logged:\n{log}"));
    for l in &lines[..=applied] {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.is_object() && v["level"].is_string() && v["message"].is_string());
    }
    let changed: serde_json::Value = serde_json::from_str(lines[applied]).unwrap();
    assert_eq!(changed["format"], "text", "{}", lines[applied]);
    assert!(lines[applied + 1..].iter().all(|l| !l.starts_with('{')));
    assert!(lines
        .iter()
        .any(|l| l.contains("INFO") && l.contains("shutdown summary")));
}

/// Under systemd (JOURNAL_STREAM is stderr): `<N>` first, no time stamp. JOURNAL_STREAM
/// naming another file (inherited from a parent) changes nothing.
#[test]
fn journal_priorities_without_time_stamps() {
    let dir = TempDir::new("log-journal");
    let cfg = dir.join("gtmd.toml");
    std::fs::write(&cfg, format!("version = 1\n{ZONE}")).unwrap();
    let p = Proc::start(&dir, &cfg, &[], Some(true));
    // A rejected reload logs errors.
    std::fs::write(&cfg, "version = 1\n[log]\nformat = \"yaml\"\n").unwrap();
    p.signal(libc::SIGHUP);
    p.wait_line("reload rejected", |l| l.contains("reload rejected: still"));
    let log = p.stop();
    for l in log.lines() {
        let (prio, rest) = l.split_at(3);
        let level = rest.split_whitespace().next().unwrap_or("");
        let want = match level {
            "ERROR" => "<3>",
            "WARN" => "<4>",
            "INFO" => "<6>",
            _ => panic!("a level right after the priority: {l}"),
        };
        assert_eq!(prio, want, "{l}");
    }
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload rejected"))
        .collect();
    assert!(rejected.len() >= 2, "{log}");
    assert!(rejected.iter().all(|l| l.starts_with("<3>")), "{log}");
    assert!(
        rejected
            .iter()
            .any(|l| l.contains("log.format: 'yaml' is not one of \"text\", \"json\"")),
        "{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.starts_with("<6>") && l.contains(" ready ")));

    // JSON under the journal: the priority, then an object without a time stamp.
    let json = format!("version = 1\n[log]\nformat = \"json\"\n{ZONE}");
    std::fs::write(&cfg, json).unwrap();
    let p = Proc::start(&dir, &cfg, &[], Some(true));
    let log = p.stop();
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(&l[3..]).unwrap();
        assert_eq!(&l[..3], "<6>", "{l}");
        assert_eq!(v["level"], "INFO", "{l}");
        assert!(v.get("timestamp").is_none(), "{l}");
    }
    assert!(log.contains("\"message\":\"ready\""), "{log}");

    std::fs::write(&cfg, format!("version = 1\n{ZONE}")).unwrap();
    let p = Proc::start(&dir, &cfg, &[], Some(false));
    let log = p.stop();
    assert!(log.lines().all(|l| l.starts_with("20")), "{log}");
}

/// `level = "warn"` keeps info lines out; `RUST_LOG` overrides it.
#[test]
fn level_from_the_file_unless_rust_log() {
    let dir = TempDir::new("log-level");
    let cfg = dir.join("gtmd.toml");
    std::fs::write(
        &cfg,
        format!("version = 1\n[log]\nlevel = \"warn\"\n{ZONE}"),
    )
    .unwrap();
    let p = Proc::start(&dir, &cfg, &[], None);
    std::fs::write(&cfg, "version = 2\n").unwrap();
    p.signal(libc::SIGHUP);
    p.wait_line("reload rejected", |l| l.contains("reload rejected"));
    let log = p.stop();
    assert!(!log.contains(" INFO "), "{log}");
    assert!(log.contains("ERROR"), "{log}");

    std::fs::write(
        &cfg,
        format!("version = 1\n[log]\nlevel = \"warn\"\n{ZONE}"),
    )
    .unwrap();
    let p = Proc::start(&dir, &cfg, &[("RUST_LOG", "info")], None);
    let log = p.stop();
    assert!(log.contains(" INFO ") && log.contains("ready"), "{log}");
}
