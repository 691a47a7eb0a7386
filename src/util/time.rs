//! nginx's cached monotonic clock.

use nginx_sys::ngx_current_msec;

/// Milliseconds on nginx's monotonic clock, as of the last event loop iteration.
pub fn now_ms() -> u64 {
    // SAFETY: nginx updates this clock in the worker's own thread, between events.
    unsafe { ngx_current_msec as u64 }
}
