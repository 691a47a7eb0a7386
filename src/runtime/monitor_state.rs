//! What a worker last told a C balancer's backend monitor (`runtime::backend_monitor` does the
//! telling), kept in the worker's runtime.

use std::cell::{Cell, RefCell, UnsafeCell};

use nginx_sys::ngx_event_t;

use crate::core::backend_status::BackendStatus;

/// What this worker last told the monitor.
pub struct BackendMonitorState {
    /// The shared generation last looked at (`u64::MAX`: never).
    pub(super) generation: Cell<u64>,
    pub(super) told: RefCell<Vec<Option<BackendStatus>>>,
    pub(super) timer: UnsafeCell<ngx_event_t>,
}

impl BackendMonitorState {
    pub fn new(backends: usize) -> Self {
        Self {
            generation: Cell::new(u64::MAX),
            told: RefCell::new(vec![None; backends]),
            // SAFETY: zeroed is a valid unset event.
            timer: UnsafeCell::new(unsafe { std::mem::zeroed() }),
        }
    }
}
