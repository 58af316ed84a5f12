//! Produces `descriptor/envoy-v3.bin` from envoy-types' `src/generated/types.bin`: drops
//! `source_code_info` (3.3 MB -> 0.7 MB) at the wire level so field options, and with them
//! the protoc-gen-validate rules, survive byte for byte.
//!
//! `cargo run -p envoy-api --example strip-descriptor -- IN OUT`

use bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

// Copies every field of a message except `drop_tag`, byte for byte (keeps extensions).
fn strip(mut buf: &[u8], drop_tag: u32) -> Vec<u8> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        let start = buf;
        let (tag, wt) = decode_key(&mut buf).expect("valid descriptor set");
        match wt {
            WireType::Varint => {
                decode_varint(&mut buf).expect("valid descriptor set");
            }
            WireType::SixtyFourBit => buf.advance(8),
            WireType::ThirtyTwoBit => buf.advance(4),
            WireType::LengthDelimited => {
                let n = decode_varint(&mut buf).expect("valid descriptor set") as usize;
                buf.advance(n);
            }
            _ => panic!("groups"),
        }
        let used = start.len() - buf.len();
        if tag != drop_tag {
            out.extend_from_slice(&start[..used]);
        }
    }
    out
}

fn main() {
    let src = std::env::args().nth(1).expect("valid descriptor set");
    let dst = std::env::args().nth(2).expect("valid descriptor set");
    let bytes = std::fs::read(src).expect("valid descriptor set");
    let mut buf = bytes.as_slice();
    let mut out = Vec::new();
    while buf.has_remaining() {
        let (tag, wt) = decode_key(&mut buf).expect("valid descriptor set");
        assert!(tag == 1 && wt == WireType::LengthDelimited);
        let n = decode_varint(&mut buf).expect("valid descriptor set") as usize;
        let file = strip(&buf[..n], 9);
        buf.advance(n);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(file.len() as u64, &mut out);
        out.extend_from_slice(&file);
    }
    std::fs::write(&dst, &out).expect("valid descriptor set");
    let pool = prost_reflect::DescriptorPool::decode(out.as_slice()).expect("valid descriptor set");
    let m = pool
        .get_message_by_name("envoy.config.core.v3.SocketAddress")
        .expect("valid descriptor set");
    let f = m
        .get_field_by_name("port_value")
        .expect("valid descriptor set");
    let ext = pool
        .get_extension_by_name("validate.rules")
        .expect("valid descriptor set");
    println!(
        "files {} has rules {}",
        pool.files().count(),
        f.options().has_extension(&ext)
    );
}
