//! What this worker keeps of one `supervisord` line: the connection, sync timer and last read
//! error of the supervisord it names (used when the line leads its host, `runtime::host`).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ptr;

use nginx_sys::{ngx_connection_t, ngx_event_t};

/// What this worker keeps of one `supervisord` line (used when the line leads its host).
pub struct LineRuntime {
    /// The upstream and line it belongs to, for its timers.
    pub(super) upstream: usize,
    pub(super) line: usize,
    /// This worker's kept-alive connection to supervisord, if any.
    pub idle_connection: Cell<*mut ngx_connection_t>,
    /// Reads supervisord's view every `supervisord_sync_interval`.
    pub sync_timer: UnsafeCell<ngx_event_t>,
    /// The last error reading supervisord's view, logged once until it changes.
    pub last_sync_error: RefCell<Option<String>>,
}

impl LineRuntime {
    pub fn new(upstream: usize, line: usize) -> Self {
        Self {
            upstream,
            line,
            idle_connection: Cell::new(ptr::null_mut()),
            // SAFETY: zeroed is a valid unset event.
            sync_timer: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            last_sync_error: RefCell::new(None),
        }
    }
}
