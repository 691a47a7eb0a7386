//! The pure core: plain Rust with no nginx symbols, so that `cargo test` links it and fuzzers
//! can drive it. Everything that touches nginx lives outside this tree.

pub mod backend_status;
pub mod call_outcome;
pub mod commands;
pub mod control_uri;
pub mod duration;
pub mod http_exchange;
pub mod process_state;
pub mod status_json;
pub mod supervisord_address;
pub mod upstream_identity;
pub mod xmlrpc;

#[cfg(test)]
mod captures;
