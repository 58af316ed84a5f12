//! Bytes Strait reads or writes on a downstream HTTP/1 connection and inspects itself
//! (request-head checks, codec error replies): never panic on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strait_http::io;

fuzz_target!(|data: &[u8]| {
    let _ = io::bad_version(data);
    let _ = io::missing_host(data);
    let _ = io::is_codec_error_reply(data);
    let _ = io::contains_ci(data, b"\ntransfer-encoding:");
});
