//! The Envoy v3 / xDS protobuf types and the descriptor set that describes them.
//!
//! Owns nothing else: interpreting the protos is `strait-config`'s job. The typed messages
//! come from `envoy-types`; the descriptor set (with `source_code_info` stripped, 0.6 MB) is
//! bundled so config can be parsed reflectively with Envoy's JSON rules and dumped back.

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

pub use envoy_types::pb;

static DESCRIPTOR_SET: &[u8] = include_bytes!("../descriptor/envoy-v3.bin");

/// The shared descriptor pool of every Envoy v3 message Strait knows.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bundled set is produced at build time from envoy-types' own descriptors; a
        // decode failure is a packaging bug, not an input error.
        DescriptorPool::decode(DESCRIPTOR_SET).expect("bundled Envoy descriptor set is valid")
    })
}

/// `type.googleapis.com/envoy.x.y.Z` -> `envoy.x.y.Z`: the name after the last `/`.
pub fn type_name_of_url(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// The full `type_url` of a proto message name.
pub fn type_url_of(name: &str) -> String {
    format!("type.googleapis.com/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_has_bootstrap_and_validate_rules() {
        let p = pool();
        assert!(
            p.get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
                .is_some()
        );
        assert!(p.get_extension_by_name("validate.rules").is_some());
        assert_eq!(type_name_of_url("type.googleapis.com/a.B"), "a.B");
    }
}
