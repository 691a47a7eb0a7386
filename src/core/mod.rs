//! The pure core: plain Rust with no nginx symbols, so that `cargo test` links it and fuzzers
//! can drive it. Everything that touches nginx lives outside this tree.

pub mod backend_status;
pub mod commands;
pub mod control_uri;
pub mod supervisord_address;
pub mod upstream_identity;
