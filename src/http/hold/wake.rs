//! Held requests wake by event: while a worker holds any, it looks at the upstream's shared
//! generation every `WAKE_TICK_MS` (one atomic load) and re-evaluates its held requests only
//! when it moved: on they go to the balancer, or they are answered (502 at once when their
//! start failed).
//!
//! Also the events of a held request: its hold deadline (503 then), its client leaving, and
//! the ends of a hold (on to the balancer, or answered).

use std::ptr::addr_of_mut;

use nginx_sys::{
    ngx_add_timer, ngx_del_timer, ngx_event_t, ngx_handle_write_event, ngx_http_core_run_phases,
    ngx_http_finalize_request, ngx_http_request_t, ngx_http_run_posted_requests,
    ngx_http_test_reading, ngx_int_t, ngx_post_event, ngx_posted_events, NGX_ERROR,
    NGX_HTTP_BAD_GATEWAY, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::Request;

use super::record::{held_context, release};
use super::verdict::{backing_off, start_one, verdict, RETRY_AFTER};
use crate::core::hold::hold_verdict::HoldVerdict;
use crate::runtime::hold_queue::Batch;
use crate::runtime::{init_busy, HeldRequest, UpstreamRuntime};
use crate::util::log::cycle_log;
use crate::util::reply::error_status;
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

/// Sets the events of a request just queued as held: its deadline, its wake, its client.
///
/// # Safety
/// `r` must be live and queued in `upstream.held`.
pub(super) unsafe fn start_hold(r: *mut ngx_http_request_t, upstream: &'static UpstreamRuntime) {
    arm_wake_timer(upstream);
    // SAFETY: r is live; its connection's write event carries the hold deadline.
    unsafe {
        (*r).read_event_handler = Some(ngx_http_test_reading);
        (*r).write_event_handler = Some(on_hold_write_event);
        // The write event's timer is the hold deadline; it also keeps a gracefully exiting
        // worker (after a reload) alive until the request is answered.
        let wev = (*(*r).connection).write;
        (*wev).set_delayed(1);
        ngx_add_timer(wev, upstream.conf.hold_timeout_ms() as _);
        // A client that closed while its request was read has no event coming: its end of
        // file was seen with the request. Looking once now notices it (and frees the request,
        // which takes it off the hold count); on an open connection the look costs nothing.
        ngx_post_event((*(*r).connection).read, addr_of_mut!(ngx_posted_events));
    }
}

/// The held request's write event: either spurious (the connection became writable) or the
/// hold deadline. nginx clears `delayed` (and `timedout`) of a delayed event whose timer
/// expired before calling this, so a still-delayed event is a spurious one.
unsafe extern "C" fn on_hold_write_event(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the live, held request.
    let wev = unsafe { (*(*r).connection).write };
    // SAFETY: `wev` is the write event of the live request's connection, read just above.
    if unsafe { (*wev).delayed() } != 0 {
        // SAFETY: `wev` is the live connection's write event; re-arming it after a spurious wake
        // is what ngx_http_writer does for a delayed event.
        if unsafe { ngx_handle_write_event(wev, 0) } != NGX_OK as ngx_int_t {
            // SAFETY: `r` is the live request nginx called this write handler with; it is not
            // touched after it is finalized.
            unsafe { ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t) };
        }
        return;
    }
    // SAFETY: `r` is the live request nginx called this write handler with.
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the context, when set, is this request's record in its pool; only this thread
    // touches it.
    let Some(held) = (unsafe { held_context(request).as_mut() }) else {
        // SAFETY: `r` is the live request nginx called this write handler with; it is not
        // touched after it is finalized.
        unsafe { ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t) };
        return;
    };
    // SAFETY: the request is live and held.
    unsafe { time_out(held) };
}

/// Answers a request its hold timeout caught: 503 with `Retry-After`.
///
/// # Safety
/// `held` must be the record of a live, held request that has sent nothing.
pub(super) unsafe fn time_out(held: &mut HeldRequest) {
    let upstream = held.upstream;
    release(held);
    // SAFETY: `held` is the record of a live, held request (this fn's contract), so
    // `held.request` is live; `release` above only took it off the queue.
    let request = unsafe { Request::from_ngx_http_request(held.request) };
    ngx::ngx_log_error!(
        NGX_LOG_WARN,
        request.log(),
        "supervisord: upstream \"{}\": no backend up within {} ms, request not held longer",
        upstream.name,
        upstream.hold_timeout_ms()
    );
    let rc = error_status(request, NGX_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER);
    // SAFETY: `held.request` is live and has sent nothing (this fn's contract), and its hold
    // just ended (`release` above), as `answer` requires.
    unsafe { answer(held, rc) };
}
