//! ngx_supervisord: an nginx module that starts, stops and routes to the processes behind an
//! `upstream {}` through supervisord.
//!
//! `core` is pure logic; everything else is the thin edge that wires it into nginx. The edge is
//! left out of `cargo test` builds, whose test binary could not link nginx's symbols.

pub mod core;

#[cfg(not(test))]
mod balancer;
#[cfg(not(test))]
mod commander;
#[cfg(not(test))]
mod conf;
#[cfg(not(test))]
mod control_handler;
#[cfg(not(test))]
mod hold_gate;
#[cfg(not(test))]
mod http_reply;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod readiness_probe;
#[cfg(not(test))]
mod reconciler;
#[cfg(not(test))]
mod shared_zone;
#[cfg(not(test))]
mod status_handler;
#[cfg(not(test))]
mod supervisord_client;
