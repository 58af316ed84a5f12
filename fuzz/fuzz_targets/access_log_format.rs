//! Access log format strings (from config, possibly from a control plane): parse and render.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(f) = strait_accesslog::Formatter::parse_text(s) {
        let mut out = Vec::new();
        f.render(&strait_accesslog::LogContext::default(), &mut out);
    }
});
