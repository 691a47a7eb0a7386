//! The pure core: plain Rust with no nginx symbols, so that `cargo test` links it and fuzzers
//! can drive it. Every decision the module takes lives here; everything that touches nginx
//! lives outside this tree and only carries these decisions out.
//!
//! Its own crate (`ngx_supervisord_core`, re-exported by the module as `crate::core`) with no
//! `ngx` or `nginx-sys` dependency: a binary that links the module's cdylib needs nginx's
//! symbols, one that links this crate does not.

#![forbid(unsafe_code)]

pub mod backend_event;
pub mod backend_status;
pub mod balancer_api;
pub mod call_outcome;
pub mod command_reply;
pub mod commands;
pub mod control_uri;
pub mod drain;
pub mod failure;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hold_verdict;
pub mod http_exchange;
pub mod liveness;
pub mod machine;
pub mod metrics_text;
pub mod placement;
pub mod probe_schedule;
pub mod process_state;
pub mod reachability;
pub mod reclaim;
pub mod reconcile_plan;
pub mod refused_attempt;
pub mod reply_limit;
pub mod scaling;
pub mod server_addresses;
pub mod server_hosts;
pub mod socket_access;
pub mod start_backoff;
pub mod start_handshake;
pub mod start_watch;
pub mod status_json;
pub mod supervisord_address;
pub mod supervisord_host;
pub mod upstream_identity;
pub mod worker_slots;
pub mod xmlrpc;

#[cfg(test)]
mod captures;

/// The settings of every property test of the core.
#[cfg(test)]
fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        // A failure found is kept as a unit test of its own, with its story, not as a seed
        // file that proptest would write outside the crate (`proptest-regressions/`).
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
