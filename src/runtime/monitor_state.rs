//! What a worker last told a C balancer's backend monitor (`runtime::backend_monitor` does the
//! telling), kept in the worker's runtime.

use std::cell::{Cell, UnsafeCell};

use nginx_sys::ngx_event_t;

/// When this worker last looked for news to tell the monitor (what it told each backend is
/// `BackendRuntime::monitor_told`).
pub struct BackendMonitorState {
    /// The shared generation last looked at (`u64::MAX`: never).
    pub(super) generation: Cell<u64>,
    pub(super) timer: UnsafeCell<ngx_event_t>,
}

impl BackendMonitorState {
    pub fn new() -> Self {
        Self {
            generation: Cell::new(u64::MAX),
            // SAFETY: zeroed is a valid unset event.
            timer: UnsafeCell::new(unsafe { std::mem::zeroed() }),
        }
    }
}
