//! Runs the Envoy compatibility cases (`compat/cases`, `compat/validate`) against real Envoy.
//!
//! Runs only when `STRAIT_COMPAT_ENVOY=/path/to/envoy` is set (`compat/check-envoy.sh` sets
//! it); otherwise prints a skip line. `case_files_load` always runs and checks that every case
//! file parses.

use strait_testkit::compat::{self, ProxyCmd};

#[test]
fn envoy_matches_compat_cases() {
    let Some(envoy) = std::env::var_os("STRAIT_COMPAT_ENVOY").filter(|v| !v.is_empty()) else {
        eprintln!(
            "SKIPPED envoy_matches_compat_cases: STRAIT_COMPAT_ENVOY is not set \
             (run `bash compat/check-envoy.sh` to check the cases against real Envoy)"
        );
        return;
    };
    let report = compat::run_all(&ProxyCmd::envoy(envoy));
    report.assert_ok();
}

#[test]
fn case_files_load() {
    let dir = compat::compat_dir();
    let problems = compat::check_case_files(&dir);
    assert!(
        problems.is_empty(),
        "bad case files:\n{}",
        problems.join("\n")
    );
}
