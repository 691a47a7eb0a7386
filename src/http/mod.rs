//! The HTTP side: the balancer wrapper, the hold gate, and the control, status and metrics handlers, the log variables.

pub mod balancer;
pub mod control;
pub mod hold_gate;
pub mod metrics;
pub mod peer_init_hold;
pub mod status;
pub mod variables;
