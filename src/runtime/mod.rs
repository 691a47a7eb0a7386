//! Per-worker runtime state: built in `init_process` for each managed upstream, owned by the
//! worker's cycle (freed with its pool), reached from any handler through `worker::upstream`.

pub mod backend_monitor;
pub mod backend_runtime;
pub mod hold_queue;
pub mod host;
pub mod init_busy;
pub mod line_runtime;
pub mod monitor_state;
pub mod worker;

pub use hold_queue::{HeldRequest, HoldQueue};
pub use host::Host;
pub use worker::UpstreamRuntime;
