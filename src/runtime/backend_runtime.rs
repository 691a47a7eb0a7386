//! What a worker keeps of one backend of a managed upstream, beside the shared record: its
//! own view of the peer list, failures and drains.

use std::cell::{Cell, UnsafeCell};

use nginx_sys::ngx_event_t;

use crate::conf::balancer_hooks::Checker;
use crate::core::backend_status::BackendStatus;
use crate::core::start::failure::FailureCount;

pub struct BackendRuntime {
    /// The shared up count this worker's peer list last reflected.
    pub applied_up_count: Cell<u64>,
    /// The failed requests this worker counted (nginx's max_fails/fail_timeout).
    pub failures: Cell<FailureCount>,
    /// A failure check of it is under way in this worker.
    pub failure_check: Cell<bool>,
    /// The drain this worker watches before stopping it (`commander::stop_after_drain`).
    pub drain: DrainTimer,
    /// The C balancer's checker a stop this worker drains waits for too.
    pub stop_checker: Cell<Option<Checker>>,
    /// The status this worker last told the C balancer's backend monitor.
    pub monitor_told: Cell<Option<BackendStatus>>,
}

impl BackendRuntime {
    pub fn new() -> Self {
        Self {
            applied_up_count: Cell::new(0),
            failures: Cell::new(FailureCount::default()),
            failure_check: Cell::new(false),
            drain: DrainTimer::new(),
            stop_checker: Cell::new(None),
            monitor_told: Cell::new(None),
        }
    }
}

/// A backend's drain as watched by the worker that took its stop: a timer that looks at the
/// backend's in-flight count over all workers, and when the drain began.
pub struct DrainTimer {
    pub event: UnsafeCell<ngx_event_t>,
    pub started_ms: Cell<u64>,
}

impl DrainTimer {
    fn new() -> Self {
        Self {
            // SAFETY: zeroed is a valid unset event.
            event: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            started_ms: Cell::new(0),
        }
    }
}
