//! The fuzz targets' checks (`h5pay_worker::fuzz_targets`) over their
//! seeds and every input a fuzzing run ever crashed on (`fuzz/seeds/`,
//! `fuzz/regressions/`): the short, always-on version of `make fuzz`.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("a corpus file");
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

fn replay(target: &str, check: fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no seeds for {target}");
    for (path, bytes) in all {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{target} fails on {}", path.display());
    }
}

#[test]
fn the_intake_corpus_keeps_its_properties() {
    replay("intake", h5pay_worker::fuzz_targets::intake);
}

#[test]
fn the_gateway_answer_corpus_keeps_its_properties() {
    replay("gateway_answer", h5pay_worker::fuzz_targets::gateway_answer);
}

#[test]
fn the_sign_corpus_keeps_its_properties() {
    replay("sign_verify", h5pay_worker::fuzz_targets::sign_verify);
}

#[test]
fn the_config_corpus_keeps_its_properties() {
    replay("config", h5pay_worker::fuzz_targets::config);
}

#[test]
fn the_notify_corpus_keeps_its_properties() {
    replay("notify", h5pay_worker::fuzz_targets::notify);
}
