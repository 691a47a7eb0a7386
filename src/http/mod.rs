//! The HTTP side: the balancer wrapper, holding requests, and the control, status and metrics
//! handlers, the log variables.

pub mod balancer;
pub mod control;
pub mod hold;
pub mod metrics;
pub mod status;
pub mod variables;
