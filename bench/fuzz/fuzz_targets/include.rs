//! Fuzz target: any text as an included file of access domains. Whenever the fast reader
//! (src/config/gslb/reader.rs) takes it, the `toml` crate must accept it and read the same
//! specs, spans included; the reader giving a file up is always fine (the `toml` crate then
//! reads it). Seeds: the included files of tests/ and examples/, and
//! bench/fuzz/seeds/include/ (files of bench/model-scale's shape).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        gtmd::config::gslb::assert_agrees_with_toml(text);
    }
});
