//! ngx_supervisord: an nginx module that starts, stops and routes to the processes behind an
//! `upstream {}` through supervisord.
//!
//! Dependencies point one way, each layer using only those before it:
//! `core` (pure decisions) <- `util` (nginx helpers) <- `conf` (settings) <- `module_type`
//! <- `shared` (the shared zone) <- `runtime` (per-worker state) <- `supervisord` (client,
//! commander, readiness, reconciler) <- `http` (balancer, hold gate, handlers) <- `api` (the
//! C API for balancer modules) <- `module` (the composition root). The edge is left out of `cargo test` builds, whose test binary
//! could not link nginx's symbols.

/// The pure core, its own crate (`src/core/`) so that test and fuzz binaries can link it.
pub use ngx_supervisord_core as core;

#[cfg(not(test))]
mod api;
#[cfg(not(test))]
mod conf;
#[cfg(not(test))]
mod http;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod module_type;
#[cfg(not(test))]
mod runtime;
#[cfg(not(test))]
mod shared;
#[cfg(not(test))]
mod supervisord;
#[cfg(not(test))]
mod util;
