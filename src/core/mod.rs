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
pub mod commands;
pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hold;
pub mod machine;
pub mod policy;
pub mod protocol;
pub mod render;
pub mod start;
pub mod zone;

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
