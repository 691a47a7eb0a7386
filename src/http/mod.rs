//! The HTTP side: the balancer wrapper, the hold gate, and the control and status handlers.

pub mod balancer;
pub mod control;
pub mod hold_gate;
pub mod status;
