//! Held requests wake by event: while a worker holds any, it looks at the upstream's shared
//! generation every `WAKE_TICK_MS` (one atomic load) and re-evaluates its held requests only
//! when it moved: on they go to the balancer, or they are answered (502 at once when their
//! start failed).

use nginx_sys::{
    ngx_add_timer, ngx_del_timer, ngx_event_t, ngx_http_core_run_phases, ngx_http_finalize_request,
    ngx_http_request_t, ngx_http_run_posted_requests, ngx_int_t, NGX_HTTP_BAD_GATEWAY, NGX_OK,
};
use ngx::http::Request;

use super::gate::{backing_off, start_one, verdict};
use crate::core::hold::hold_verdict::HoldVerdict;
use crate::runtime::hold_queue::Batch;
use crate::runtime::{init_busy, HeldRequest, UpstreamRuntime};
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

const WAKE_TICK_MS: usize = 2;

pub(super) fn arm_wake_timer(upstream: &'static UpstreamRuntime) {
    let event = upstream.wake_timer.get();
    // SAFETY: the event lives in the worker's runtime; only this worker's thread touches it.
    let (armed, first) = unsafe { ((*event).timer_set() != 0, (*event).handler.is_none()) };
    if armed {
        return;
    }
    if first {
        upstream.wake_seen_generation.set(0);
    }
    // Not cancelable: held requests keep a gracefully exiting worker alive anyway.
    upstream.arm_timer(event, on_wake_tick, WAKE_TICK_MS as u64, false);
}

unsafe extern "C" fn on_wake_tick(event: *mut ngx_event_t) {
    // SAFETY: armed by `arm_wake_timer`.
    let upstream = unsafe { UpstreamRuntime::of_timer(event) };
    let generation = upstream.shared().generation();
    if generation != upstream.wake_seen_generation.get() {
        upstream.wake_seen_generation.set(generation);
        wake_held(upstream);
    }
    if !upstream.held.is_empty() {
        // SAFETY: re-arming our own event.
        unsafe { ngx_add_timer(event, WAKE_TICK_MS) };
    }
}

/// Looks at every request this worker holds for `upstream` once.
fn wake_held(upstream: &'static UpstreamRuntime) {
    // SAFETY: the batch stays in this frame.
    let mut batch = unsafe { Batch::new() };
    upstream.held.drain_into(&mut batch);
    let (mut resumed, mut failed, mut waiting) = (0u64, 0u64, 0u64);
    // A request resumed below may free another one of the batch: that one unlinks itself
    // from the batch through its pool cleanup, so only live requests are popped.
    while let Some(held) = batch.pop() {
        // SAFETY: a popped record belongs to a live request.
        let held = unsafe { &mut *held.as_ptr() };
        let r = held.request;
        if awaiting_check(upstream, held) {
            upstream.held.push(held);
            waiting += 1;
            continue;
        }
        match verdict(upstream, held.failures_seen) {
            HoldVerdict::Wait { start } => {
                if start {
                    start_one(upstream);
                }
                upstream.held.push(held);
                waiting += 1;
            }
            HoldVerdict::Proceed => {
                held.let_go(now_ms());
                resumed += 1;
                // SAFETY: the request is held (suspended in its phase loop or its peer.init)
                // and live.
                unsafe { go_on(held) };
            }
            // The commander logged why the start failed; the last read of supervisord which
            // programs it lacks.
            HoldVerdict::StartFailed | HoldVerdict::NoProgram => {
                held.let_go(now_ms());
                failed += 1;
                // SAFETY: a popped record's request is live (a freed one unlinks itself from the
                // batch), and its hold just ended (`let_go`), as `answer` requires.
                unsafe { answer(held, NGX_HTTP_BAD_GATEWAY as ngx_int_t) };
            }
            HoldVerdict::BackingOff { retry_after_ms } => {
                held.let_go(now_ms());
                failed += 1;
                // SAFETY: the request is held and live.
                let request = unsafe { Request::from_ngx_http_request(r) };
                let rc = backing_off(request, upstream, retry_after_ms);
                // SAFETY: the popped record's request is live and its hold just ended (`let_go`
                // above), as `answer` requires.
                unsafe { answer(held, rc) };
            }
        }
    }
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\": status changed, held requests: {} resumed, {} answered 502, {} still waiting",
        upstream.name(),
        resumed,
        failed,
        waiting
    );
}

/// Whether a request held again still waits for the failure check of its backend (see
/// `core::hold::refused_attempt`): until then its backend may show UP but fail it again.
fn awaiting_check(upstream: &UpstreamRuntime, held: &mut HeldRequest) -> bool {
    let Some(index) = held.awaiting_check else {
        return false;
    };
    if upstream.backends[index].failure_check.get() {
        return true;
    }
    held.awaiting_check = None;
    false
}

/// # Safety
/// `r` must be live and held.
unsafe fn stop_hold_timer(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is live and held (this fn's contract), so its connection and write event,
    // whose timer is the hold deadline (`start_hold`), are live.
    unsafe {
        let wev = (*(*r).connection).write;
        if (*wev).timer_set() != 0 {
            ngx_del_timer(wev);
        }
        (*wev).set_delayed(0);
    }
}

/// Sends a request whose hold just ended on to its upstream, where it was paused.
///
/// # Safety
/// `held` must be the record of a live request whose hold just ended.
pub(super) unsafe fn go_on(held: &mut HeldRequest) {
    if held.paused_in_peer_init {
        held.paused_in_peer_init = false;
        stop_deadline(held);
        // SAFETY: `held.request` is live (this fn's contract), paused by peer.init's NGX_BUSY,
        // which only a patched nginx allows: `init_busy::available()` holds.
        unsafe { init_busy::resume(held.request, NGX_OK as ngx_int_t) };
    } else {
        // SAFETY: `held.request` is live (this fn's contract) and held by the gate, suspended in
        // its phases, as `resume` requires.
        unsafe { resume(held.request) };
    }
}

/// Answers a request whose hold just ended with `rc`.
///
/// # Safety
/// As `go_on`.
pub(super) unsafe fn answer(held: &mut HeldRequest, rc: ngx_int_t) {
    if held.paused_in_peer_init {
        held.paused_in_peer_init = false;
        stop_deadline(held);
        // SAFETY: `held.request` is live (this fn's contract), paused by peer.init's NGX_BUSY
        // (patched nginx); the patch's resume finalizes its upstream with `rc`.
        unsafe { init_busy::resume(held.request, rc) };
    } else {
        // SAFETY: `held.request` is live (this fn's contract) and held by the gate, as
        // `end_with` requires.
        unsafe { end_with(held.request, rc) };
    }
}

/// The hold deadline of a request paused in peer.init (its record's own timer) ends with its
/// hold: the request may live on long after, talking to its backend.
fn stop_deadline(held: &mut HeldRequest) {
    if held.deadline.timer_set() != 0 {
        // SAFETY: the event lives in the record, which only this worker's thread touches.
        unsafe { ngx_del_timer(&mut held.deadline) };
    }
}

/// # Safety
/// `r` must be live and held.
unsafe fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is live and held by the gate (this fn's contract); its connection is read
    // before the phases run, which may free `r` (the connection slot stays valid).
    unsafe {
        stop_hold_timer(r);
        let connection = (*r).connection;
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(connection);
    }
}

/// # Safety
/// `r` must be live and held.
unsafe fn end_with(r: *mut ngx_http_request_t, rc: ngx_int_t) {
    // SAFETY: `r` is live and held by the gate (this fn's contract); its connection is read
    // before finalizing, which may free `r` (the connection slot stays valid).
    unsafe {
        stop_hold_timer(r);
        let connection = (*r).connection;
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(connection);
    }
}
