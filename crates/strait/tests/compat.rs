//! Envoy compatibility: runs every case of `compat/cases` and `compat/validate` (what Envoy
//! 1.40 does for the same config and traffic) against the `strait` binary.
//! `bash compat/check-envoy.sh` re-checks the same cases against real Envoy.
//! `STRAIT_COMPAT_FILTER=name1,name2` runs a subset; see compat/README.md.

use strait_testkit::compat::{self, ProxyCmd};

#[test]
fn strait_matches_envoy_compat_cases() {
    compat::run_all(&ProxyCmd::strait(env!("CARGO_BIN_EXE_strait"))).assert_ok();
}
