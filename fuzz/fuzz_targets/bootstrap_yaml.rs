//! Any bytes as a bootstrap (YAML or JSON): loading must return errors, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strait_config::{CompileOptions, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let src = Source { path: None, yaml: Some(text) };
    let _ = strait_config::load_bootstrap(&src, &CompileOptions::default());
});
