//! A held request's record: its module context in the request's pool, queued in the worker's
//! runtime while it is held and counted in the shared zone, within `supervisord_hold_limit`
//! over all workers (503 beyond) and `supervisord_hold_timeout` each (503 then). It also keeps
//! what the log variables show, and ends a cold start with the request's first response header.

use std::ffi::c_void;
use std::ptr::addr_of_mut;

use nginx_sys::{
    ngx_add_timer, ngx_del_timer, ngx_handle_write_event, ngx_http_finalize_request,
    ngx_http_request_t, ngx_http_test_reading, ngx_int_t, ngx_msec_t, ngx_pool_cleanup_add,
    ngx_post_event, ngx_posted_events, NGX_ERROR, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_WARN,
    NGX_OK,
};
use ngx::http::{HttpModule, Request};

use super::gate::RETRY_AFTER;
use super::wake::{answer, arm_wake_timer};
use crate::module_type::Module;
use crate::runtime::{HeldRequest, HoldQueue, UpstreamRuntime};
use crate::util::reply::error_status;
use crate::util::time::now_ms;

/// Counts `request` as held (within `supervisord_hold_limit`) and queues its record; `Err`
/// with the status to answer when there is no room (503) or no memory. `place` completes the
/// debug line (`" in peer.init"`).
pub(super) fn enqueue<'r>(
    request: &'r mut Request,
    upstream: &'static UpstreamRuntime,
    failures_seen: u64,
    place: &str,
) -> Result<&'r mut HeldRequest, ngx_int_t> {
    let limit = upstream.conf.hold_limit();
    let Some(first) = upstream.shared().try_hold(limit) else {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            request.log(),
            "supervisord: upstream \"{}\": {} requests held already, refusing one more",
            upstream.name(),
            limit
        );
        return Err(error_status(
            request,
            NGX_HTTP_SERVICE_UNAVAILABLE,
            RETRY_AFTER,
        ));
    };
    // SAFETY: a non-null record lives in the request's pool, as long as the request; only this
    // thread touches it.
    let Some(held) = (unsafe { held_request(request, upstream).as_mut() }) else {
        upstream.shared().release_hold();
        return Err(NGX_ERROR as ngx_int_t);
    };
    held.failures_seen = failures_seen;
    held.hold_began_ms = now_ms();
    if first && held.holds_ended == 0 {
        held.cold_start_from_ms = Some(held.hold_began_ms);
    }
    upstream.held.push(held);
    ngx::ngx_log_debug!(
        request.log(),
        "supervisord: upstream \"{}\": holding request{}, {} held in all workers",
        upstream.name(),
        place,
        upstream.shared().held()
    );
    Ok(held)
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

/// The request's held record: its module context, made (with a pool cleanup that takes it off
/// the queue should the request be freed while held) the first time the request is held.
/// Null when out of memory.
pub(super) fn held_request(
    request: &mut Request,
    upstream: &'static UpstreamRuntime,
) -> *mut HeldRequest {
    let module = Module::module();
    let existing = held_context(request);
    // SAFETY: the context, when set, is this request's record in its pool.
    if let Some(record) = unsafe { existing.as_mut() } {
        if !record.is_held() && !std::ptr::eq(record.upstream, upstream.conf) {
            // Made by the balancer of another upstream: it is held (counted) for this one.
            record.upstream = upstream.conf;
            record.shared = upstream.record();
        }
        return existing;
    }
    let pool = request.pool();
    let held = pool.allocate(HeldRequest::new(
        (&mut *request).into(),
        upstream.conf,
        upstream.record(),
    ));
    // SAFETY: the request's pool is live.
    let cleanup = unsafe { ngx_pool_cleanup_add(pool.as_ptr(), 0) };
    if held.is_null() || cleanup.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the cleanup belongs to the same pool as the record, which it runs before freeing.
    unsafe {
        (*cleanup).handler = Some(on_request_freed);
        (*cleanup).data = held as *mut c_void;
    }
    request.set_module_ctx(held as *mut c_void, module);
    held
}

/// The request's module context: its held record, or null before it was first held.
pub(super) fn held_context(request: &Request) -> *mut HeldRequest {
    let raw: &ngx_http_request_t = request.as_ref();
    // SAFETY: a live request has one context slot per http module.
    unsafe { *raw.ctx.add(Module::module().ctx_index) as *mut HeldRequest }
}

/// Notes the backend the balancer picked for `r` (`$supervisord_backend`); nothing when out of
/// memory.
pub fn note_backend(r: *mut ngx_http_request_t, upstream: &'static UpstreamRuntime, index: usize) {
    // SAFETY: the balancer passes its live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: a non-null record lives in the request's pool; only this thread touches it.
    if let Some(record) = unsafe { held_request(request, upstream).as_mut() } {
        record.backend = Some(index);
    }
}

/// The first response header `r` got from backend `index` ends a cold start it began (the
/// first request held while none was): its time from the hold's start is the backend's.
///
/// # Safety
/// `r` must be live, with its upstream, whose peer the balancer is handing back.
pub unsafe fn note_response_header(
    r: *mut ngx_http_request_t,
    upstream: &'static UpstreamRuntime,
    index: usize,
) {
    // SAFETY: `r` is live (this fn's contract: the balancer's peer.free hands its peer back).
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the context, when set, is this request's record in its pool.
    let Some(record) = (unsafe { held_context(request).as_mut() }) else {
        return;
    };
    let Some(from_ms) = record.cold_start_from_ms else {
        return;
    };
    // SAFETY: `r` and its upstream are live while its peer is handed back (this fn's contract);
    // `state` is null or the attempt's entry of `r->upstream_states`, in the request's pool.
    let Some(state) = (unsafe { (*(*r).upstream).state.as_ref() }) else {
        return;
    };
    if state.header_time == ngx_msec_t::MAX {
        // No header from this attempt (refused, reset, timed out): the next one may have it.
        return;
    }
    // SAFETY: `r->upstream` is live while its peer is handed back (this fn's contract).
    let attempt_began = unsafe { (*(*r).upstream).start_time };
    let header_at = attempt_began.wrapping_add(state.header_time) as u64;
    let took_ms = header_at.saturating_sub(from_ms);
    record.cold_start_from_ms = None;
    upstream.shared().backend(index).note_cold_start(took_ms);
    ngx::ngx_log_debug!(
        request.log(),
        "supervisord: upstream \"{}\" backend {}: cold start: first held request's first response header {} ms after it arrived",
        upstream.name(),
        index,
        took_ms
    );
}

/// What the log variables show of `r`: how long it was held in all (`None`: never), and the
/// backend the balancer last picked for it.
pub fn log_figures(r: *mut ngx_http_request_t) -> (Option<u64>, Option<usize>) {
    // SAFETY: nginx passes its live request to a variable's handler.
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the context, when set, is this request's record in its pool.
    match unsafe { held_context(request).as_ref() } {
        Some(record) => (record.held_ms_by(now_ms()), record.backend),
        None => (None, None),
    }
}

/// Takes the request off its queue and the shared count, once.
pub(super) fn release(held: &mut HeldRequest) {
    if held.deadline.timer_set() != 0 {
        // SAFETY: the event lives in the record, only this worker's thread touches it.
        unsafe { ngx_del_timer(&mut held.deadline) };
    }
    if HoldQueue::remove(held) {
        held.let_go(now_ms());
    }
}

unsafe extern "C" fn on_request_freed(data: *mut c_void) {
    // SAFETY: the cleanup's data is the request's held record, freed with the same pool.
    release(unsafe { &mut *(data as *mut HeldRequest) });
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
