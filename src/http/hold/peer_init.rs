//! Holding in peer.init (nginx patched with init_busy; `ngx_supervisord_check_servers` of the
//! C API): a request that reaches its balancer while no backend is UP, which the hold gate
//! could not hold (a subrequest, a `proxy_pass` whose upstream name comes from a variable), is
//! held there: peer.init answers NGX_BUSY and the request waits in the same queue as the
//! gate's, with the same bounds, and goes on through the patch's resume once a backend is UP.
//! The resume goes straight to peer.get, so the balancer wrapper brings the balancer's peers up
//! to date there too (`balancer::catch_up`): a balancer still seeing every peer down would
//! answer "no live upstreams", which the patch answers 502 as stock nginx does.

use std::cell::Cell;
use std::ffi::c_void;

use nginx_sys::{ngx_add_timer, ngx_event_t, ngx_http_request_t, ngx_int_t, NGX_BUSY, NGX_OK};
use ngx::http::Request;

use super::record::enqueue;
use super::verdict::{hold_step, HoldStep};
use super::wake::arm_wake_timer;
use super::wake::time_out;
use crate::runtime::{init_busy, HeldRequest, UpstreamRuntime};

thread_local! {
    /// Set while the balancer wrapper runs the peer.init it wraps.
    static IN_WRAPPED_INIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs the wrapped balancer's peer.init. A C balancer's `ngx_supervisord_check_servers` in
/// there does not hold: balancers stacked on it (`keepalive` on a patched round-robin) take
/// anything but NGX_OK for an error; the wrapper, outermost, holds once they all said OK.
pub fn wrapped(init: impl FnOnce() -> ngx_int_t) -> ngx_int_t {
    IN_WRAPPED_INIT.with(|flag| {
        let outer = flag.replace(true);
        let rc = init();
        flag.set(outer);
        rc
    })
}

/// Whether a peer.init the balancer wrapper runs is running: the wrapper decides afterwards.
pub fn inside_wrapped_init() -> bool {
    IN_WRAPPED_INIT.with(Cell::get)
}

/// What peer.init answers for `r`: NGX_OK when a backend is UP (or nothing can hold: stock
/// nginx), NGX_BUSY when the request is held, or the HTTP status to answer it with at once.
///
/// # Safety
/// `r` must be the live request whose balancer's peer.init is running.
pub unsafe fn check(r: *mut ngx_http_request_t, upstream: &'static UpstreamRuntime) -> ngx_int_t {
    if !init_busy::available() {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: `r` is the live request whose balancer's peer.init runs (this fn's contract).
    let request = unsafe { Request::from_ngx_http_request(r) };
    let failures_seen = upstream.shared().failed_starts();
    match hold_step(request, upstream, failures_seen) {
        HoldStep::Proceed => return NGX_OK as ngx_int_t,
        HoldStep::Answer(rc) => return rc,
        HoldStep::Hold => {}
    }
    let held = match enqueue(request, upstream, failures_seen, " in peer.init") {
        Ok(held) => held,
        Err(rc) => return rc,
    };
    held.paused_in_peer_init = true;
    let deadline: *mut ngx_event_t = &mut held.deadline;
    // SAFETY: the event lives in the record, in the request's pool; the record's pool cleanup
    // deletes its timer should the request be freed while held.
    unsafe {
        (*deadline).handler = Some(on_deadline);
        (*deadline).data = held as *mut HeldRequest as *mut c_void;
        (*deadline).log = (*(*r).connection).log;
        ngx_add_timer(deadline, upstream.conf.hold_timeout_ms() as _);
    }
    arm_wake_timer(upstream);
    NGX_BUSY as ngx_int_t
}

/// The hold timeout of a request paused in peer.init: 503, as for one the gate holds.
unsafe extern "C" fn on_deadline(event: *mut ngx_event_t) {
    // SAFETY: the event's data is its record, alive while its timer is set (the record's pool
    // cleanup deletes it); the hold's end deletes it too (`wake::stop_deadline`).
    let held = unsafe { &mut *((*event).data as *mut HeldRequest) };
    if !held.is_held() || !held.paused_in_peer_init {
        return;
    }
    // SAFETY: its request is live (its pool holds the record), held, paused in peer.init.
    unsafe { time_out(held) };
}
