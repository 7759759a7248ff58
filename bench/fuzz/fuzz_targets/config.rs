//! Fuzz target: any text as a gtmd configuration file, loaded and compiled as `gtmd check`
//! does. Anything but a panic is fine (errors are the expected outcome of most inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Zone files named by the config resolve in a directory with none: only inline data.
    let base = std::path::Path::new("/nonexistent");
    if let Ok(cfg) = gtmd::config::Config::from_str(text, "fuzz.toml".into(), base) {
        let _ = gtmd::compile::compile(&cfg, 1);
    }
});
