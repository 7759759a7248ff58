//! Runs a GSLB scenario of `tests/cases/*.scenario`: a gtmd of its own (its state changes)
//! with a copy of an `examples/` configuration, then each step in order: its overrides
//! (control API), edits and reloads, then its query, checked as a case. The first step
//! that fails ends the scenario: the later ones start from its state.

use std::time::Duration;

use super::format::{load_scenario, Action};
use crate::harness::{example, http_auth, Server, TempDir};

/// Runs scenario `file` of `tests/cases/` on the I/O backend `io`.
pub(crate) fn run(io: &str, file: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let sc = load_scenario(&dir, file).unwrap_or_else(|e| panic!("{e}"));
    let scratch = TempDir::new("scenario");
    let mut text = std::fs::read_to_string(example(&sc.config))
        .unwrap_or_else(|e| panic!("examples/{}: {e}", sc.config));
    let cfg = scratch.write(&sc.config, &text);
    // Over XDP: the configuration gains [server.xdp] on a veth of the scenario's own, and
    // the queries come from the test namespace (`crate::xdp`).
    let xdp = io == "xdp";
    if xdp && !crate::xdp::available() {
        return;
    }
    let (s, _veth) = if xdp {
        let (s, v) = crate::xdp::scenario_server(&mut text, &cfg);
        (s, Some(v))
    } else {
        (
            Server::start(&["--config", cfg.to_str().unwrap(), "--io", io]),
            None,
        )
    };
    let control = s.control_addr();
    let mut generation = 1;
    for step in &sc.steps {
        for (line, action) in &step.actions {
            let at = format!("tests/cases/{file}:{line}");
            match action {
                Action::Set { address, mode } => {
                    let path = format!("/v1/addresses/{address}/override");
                    let (status, body) = http_auth(control, "PUT", &path, mode);
                    assert_eq!(status, 200, "{at}: set {address} {mode}: {body}");
                }
                Action::Edit { old, new } => {
                    assert!(
                        text.contains(old.as_str()),
                        "{at}: {old:?} is not in the config"
                    );
                    text = text.replace(old.as_str(), new);
                    std::fs::write(&cfg, &text).unwrap();
                }
                Action::Reload => {
                    generation += 1;
                    s.signal(libc::SIGHUP);
                    s.wait_log(&format!("generation={generation}"), Duration::from_secs(5));
                }
            }
        }
        if xdp {
            crate::xdp::in_ns(|| super::check::run(&s, &step.case));
        } else {
            super::check::run(&s, &step.case);
        }
    }
}
