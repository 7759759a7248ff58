//! Fuzz target: any octets as an RFC 1035 zone file of zone `z.test.` (with a fixed GSLB
//! model beside it), loaded and compiled as `gtmd check` does.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A directory of this process's own for the zone file (tmpfs where there is one).
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let root = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let d = root.join(format!("gtmd-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz directory");
        d
    })
}

const CONFIG: &str = r#"version = 1
[[zone]]
name = "z.test."
file = "z.zone"
[[address]]
name = "a"
value = "192.0.2.7"
[[address]]
name = "c"
value = "www.z.test."
[[pool]]
name = "p"
type = "ipv4"
addresses = ["a"]
[[pool]]
name = "pc"
type = "domain"
addresses = ["c"]
[[access-domain]]
name = "gtm.z.test."
type = "A"
policy = "weighted"
pools = ["p"]
[[access-domain]]
name = "gtmc.z.test."
type = "CNAME"
policy = "weighted"
pools = ["pc"]
"#;

fuzz_target!(|data: &[u8]| {
    let d = dir();
    if std::fs::write(d.join("z.zone"), data).is_err() {
        return;
    }
    if let Ok(cfg) = gtmd::config::Config::from_str(CONFIG, "fuzz.toml".into(), d) {
        let _ = gtmd::compile::compile(&cfg, 1);
    }
});
