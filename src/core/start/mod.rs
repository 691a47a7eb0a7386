//! A start's life: sending it, following it until the backend accepts connections, backing off
//! after failures, the failure rule, and reading supervisord's view back.

pub mod failure;
pub mod probe_schedule;
pub mod reachability;
pub mod reconcile_plan;
pub mod start_backoff;
pub mod start_handshake;
pub mod start_watch;
