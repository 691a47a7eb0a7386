//! A held request's record: its module context in the request's pool, queued in the worker's
//! runtime while it is held and counted in the shared zone, within `supervisord_hold_limit`
//! over all workers (503 beyond) and `supervisord_hold_timeout` each (503 then). It also keeps
//! what the log variables show, and ends a cold start with the request's first response header.

use std::ffi::c_void;

use nginx_sys::{
    ngx_del_timer, ngx_http_request_t, ngx_int_t, ngx_msec_t, ngx_pool_cleanup_add, NGX_ERROR,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_WARN,
};
use ngx::http::{HttpModule, Request};

use super::verdict::RETRY_AFTER;
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
///
/// # Safety
/// `r` must be a live request (its pool and module contexts are used).
pub unsafe fn note_backend(
    r: *mut ngx_http_request_t,
    upstream: &'static UpstreamRuntime,
    index: usize,
) {
    // SAFETY: `r` is live (this fn's contract).
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
    upstream.shared().backend(index).cold_start().note(took_ms);
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
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn log_figures(r: *mut ngx_http_request_t) -> (Option<u64>, Option<usize>) {
    // SAFETY: `r` is live (this fn's contract).
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
