//! How many backends run and which: scaling with load, placement on hosts, draining before a
//! stop, and the C API's balancer commands.

pub mod balancer_api;
pub mod drain;
pub mod placement;
pub mod scaling;
