//! The hold gate: a precontent-phase handler on locations that pass requests to an upstream
//! managed through supervisord. When no backend is UP it makes sure one is starting (the first
//! DOWN one) and holds the request, in whichever worker it arrived, until a backend is UP; the
//! request then goes on to the balancer as usual. The decisions are `core::hold_verdict`'s.
//!
//! Held requests wake by event: while a worker holds any, it looks at the upstream's shared
//! generation every `WAKE_TICK_MS` (one atomic load) and re-evaluates its held requests only
//! when it moved. Bounds: `supervisord_hold_limit` requests over all workers (503 beyond), and
//! `supervisord_hold_timeout` each (503 then). A failed start gives every held request 502 at
//! once. A backend waiting out its start backoff (a crash loop, `core::start_backoff`) is not
//! started on demand: another DOWN backend is, and when every DOWN backend waits, requests get
//! 503 with `Retry-After` (the shortest wait left) at once, without a start.
//! A held request is its own module context, queued in the worker's runtime.

use std::ffi::c_void;
use std::ptr::addr_of_mut;

use nginx_sys::{
    ngx_add_timer, ngx_del_timer, ngx_event_t, ngx_handle_write_event, ngx_http_core_run_phases,
    ngx_http_finalize_request, ngx_http_request_t, ngx_http_run_posted_requests,
    ngx_http_test_reading, ngx_int_t, ngx_msec_t, ngx_pool_cleanup_add, ngx_post_event,
    ngx_posted_events, ngx_uint_t, NGX_AGAIN, NGX_DECLINED, NGX_ERROR, NGX_HTTP_BAD_GATEWAY,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request,
};

use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::Command;
use crate::core::hold_verdict::{backend_to_start, hold_verdict, BackendView, HoldVerdict};
use crate::core::machine::Event;
use crate::core::start_watch::PendingStart;
use crate::module_type::Module;
use crate::runtime::hold_queue::Batch;
use crate::runtime::{init_busy, worker, HeldRequest, HoldQueue, UpstreamRuntime};
use crate::shared::records::SharedBackend;
use crate::supervisord::commander;
use crate::util::log::cycle_log;
use crate::util::reply::error_status;
use crate::util::time::now_ms;

const WAKE_TICK_MS: usize = 2;

fn view(backend: &SharedBackend, now: u64) -> BackendView {
    BackendView::new(backend.status(), backend.start_backoff().wait_left_ms(now))
        .with_program_missing(backend.program_missing())
}

fn verdict(upstream: &UpstreamRuntime, failures_seen: u64) -> HoldVerdict {
    let shared = upstream.shared();
    let now = now_ms();
    hold_verdict(
        shared.backends().iter().map(|backend| view(backend, now)),
        shared.failed_starts(),
        failures_seen,
    )
}

/// The 503 for a request that finds every DOWN backend waiting out its start backoff.
fn backing_off(
    request: &mut Request,
    upstream: &UpstreamRuntime,
    retry_after_ms: u64,
) -> ngx_int_t {
    ngx::ngx_log_debug!(
        request.log(),
        "supervisord: upstream \"{}\": every backend waits out its start backoff ({} ms left), answering 503",
        upstream.name(),
        retry_after_ms
    );
    let seconds = retry_after_ms.div_ceil(1000).max(1).to_string();
    error_status(
        request,
        NGX_HTTP_SERVICE_UNAVAILABLE,
        &[("Retry-After", seconds.as_str())],
    )
}

/// Starts a DOWN backend not waiting out a start backoff (on a host whose supervisord
/// answers, the least busy: `core::placement`), unless another worker got there first.
fn start_one(upstream: &'static UpstreamRuntime) {
    let lock = upstream.lock();
    let now = now_ms();
    let backends: Vec<BackendView> = upstream
        .shared()
        .backends()
        .iter()
        .enumerate()
        .map(|(index, backend)| {
            let line = upstream.conf.backends[index].line;
            // Known unreachable only: at start, whichever supervisord answers its first read
            // first must not decide where the first request's start goes (ties by order).
            let away = upstream.conf.supervised() && upstream.supervisord_unreachable(index);
            view(backend, now).on_host(line, away)
        })
        .collect();
    let Some(plan) = backend_to_start(&backends, upstream.conf.mode()) else {
        return;
    };
    let step = lock.step(
        plan.index,
        &Event::Asked {
            command: Command::Start,
            mode: upstream.conf.mode(),
            cause: Some(BackendEvent::StartOnDemand),
            pending: PendingStart::OnDemand,
        },
        now,
    );
    drop(lock);
    if plan.skipped_backing_off > 0 {
        // One line per start: starts are bounded by the backoff, not by requests.
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            cycle_log(),
            "supervisord: upstream \"{}\": no backend up, {} waiting out a start backoff; starting backend {} ({}) instead",
            upstream.name(),
            plan.skipped_backing_off,
            plan.index,
            upstream.conf.backends[plan.index].name
        );
    } else {
        ngx::ngx_log_debug!(
            cycle_log(),
            "supervisord: upstream \"{}\": no backend up, starting backend {}",
            upstream.name(),
            plan.index
        );
    }
    commander::carry_out(upstream, plan.index, &step);
}

/// The precontent-phase handler; it runs after every other precontent handler (`try_files`,
/// `mirror`), so a request that will not reach the upstream is never held and starts nothing.
/// An error status returned here goes to nginx's own error path: the phase engine stops, the
/// body is read away, `error_page` applies.
pub unsafe extern "C" fn gate(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx runs phase handlers with a live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(conf) = Module::location_conf(request).and_then(|location| location.held_upstream())
    else {
        return NGX_DECLINED as ngx_int_t;
    };
    let Some(upstream) = worker::upstream(conf.index) else {
        return NGX_DECLINED as ngx_int_t;
    };
    if conf.hooks.in_use() && init_busy::available() {
        // A balancer of the C API holds in its peer.init (`ngx_supervisord_check_servers`), as
        // with ngx_supervisord 1.4.
        return NGX_DECLINED as ngx_int_t;
    }
    let failures_seen = upstream.shared().failed_starts();
    match hold_step(request, upstream, failures_seen) {
        HoldStep::Proceed => return NGX_DECLINED as ngx_int_t,
        HoldStep::Answer(rc) => return rc,
        HoldStep::Hold => {}
    }
    if !request.is_main() && init_busy::available() {
        // Held by the balancer's peer.init instead (`peer_init_hold`), without touching the
        // connection's events, which it shares with the main request.
        return NGX_DECLINED as ngx_int_t;
    }
    if !request.is_main() {
        // A subrequest shares its connection, its events and its pool with the main request,
        // which waits for it in a phase of its own: it is not held (see README), but the start
        // it set off serves the next request.
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            request.log(),
            "supervisord: upstream \"{}\": no backend up, subrequest not held (only main requests are), answering 503",
            conf.name
        );
        return error_status(request, NGX_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER);
    }
    if let Err(rc) = enqueue(request, upstream, failures_seen, "") {
        return rc;
    }
    // SAFETY: r is live and now queued.
    unsafe { start_hold(r, upstream) };
    NGX_AGAIN as ngx_int_t
}

/// What a request that finds its upstream in the gate (or in peer.init) does now.
pub(super) enum HoldStep {
    /// A backend is UP: on to it.
    Proceed,
    /// Answered at once with this status (a failed start, every backend backing off).
    Answer(ngx_int_t),
    /// To be held (a start is under way, set off here if need be).
    Hold,
}

/// Decides what a request for `upstream` does (`core::hold_verdict`), and starts a backend
/// when the verdict says so.
pub(super) fn hold_step(
    request: &mut Request,
    upstream: &'static UpstreamRuntime,
    failures_seen: u64,
) -> HoldStep {
    match verdict(upstream, failures_seen) {
        HoldVerdict::Proceed => HoldStep::Proceed,
        // Only reachable if a start failed between the two loads of the caller and here;
        // answer as a waiter would.
        HoldVerdict::StartFailed => HoldStep::Answer(NGX_HTTP_BAD_GATEWAY as ngx_int_t),
        HoldVerdict::BackingOff { retry_after_ms } => {
            HoldStep::Answer(backing_off(request, upstream, retry_after_ms))
        }
        HoldVerdict::NoProgram => {
            // The read of supervisord that found the names missing logged them, once.
            ngx::ngx_log_debug!(
                request.log(),
                "supervisord: upstream \"{}\": supervisord has no program for any backend, answering 502",
                upstream.name()
            );
            HoldStep::Answer(NGX_HTTP_BAD_GATEWAY as ngx_int_t)
        }
        HoldVerdict::Wait { start } => {
            if start {
                start_one(upstream);
            }
            HoldStep::Hold
        }
    }
}

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
unsafe fn start_hold(r: *mut ngx_http_request_t, upstream: &'static UpstreamRuntime) {
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

// Holding again. A request whose backend refused its connection before anything was sent is,
// when `core::refused_attempt` says so, held again instead of answered 502: the balancer
// reserves a place (`reserve_hold_again`), ends the failed upstream attempt, then hands the
// request back here (`hold_again`), its phases set back to the gate so that, once a backend is
// UP, the gate lets it through and the content handler sends it again.

/// A place reserved among the held requests for one request to be held again.
pub struct HoldAgain {
    held: *mut HeldRequest,
    gate_phase: ngx_uint_t,
    failures_seen: u64,
}

/// Whether the location of `r` holds requests for `upstream`.
pub fn gate_covers(r: *mut ngx_http_request_t, upstream: &UpstreamRuntime) -> bool {
    // SAFETY: the balancer passes its live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    Module::location_conf(request)
        .and_then(|location| location.held_upstream())
        .is_some_and(|conf| std::ptr::eq(conf, upstream.conf))
}

/// How many times `r` was held again already.
pub fn times_held_again(r: *mut ngx_http_request_t) -> u32 {
    // SAFETY: the balancer passes its live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the context, when set, is this request's record in its pool.
    unsafe { held_context(request).as_ref() }.map_or(0, |held| held.times_held_again)
}

/// Reserves a place for `r` among the held requests (within `supervisord_hold_limit`);
/// `None` when there is none, or the gate's phase cannot be found. A hold that is `counted`
/// adds to the times `r` was held again (`core::refused_attempt::hold_counts`).
///
/// # Safety
/// `r` must be a live main request whose location the gate covers.
pub unsafe fn reserve_hold_again(
    r: *mut ngx_http_request_t,
    upstream: &'static UpstreamRuntime,
    awaiting_check: Option<usize>,
    counted: bool,
) -> Option<HoldAgain> {
    // SAFETY: caller's contract.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let gate_phase = gate_phase(r)?;
    let held = held_request(request, upstream);
    if held.is_null()
        || upstream
            .shared()
            .try_hold(upstream.conf.hold_limit())
            .is_none()
    {
        return None;
    }
    // SAFETY: a non-null record lives in the request's pool.
    unsafe {
        if counted {
            (*held).times_held_again += 1;
        }
        (*held).awaiting_check = awaiting_check;
    }
    Some(HoldAgain {
        held,
        gate_phase,
        failures_seen: upstream.shared().failed_starts(),
    })
}

/// Whether the gate would hold a request for `upstream` now (no backend UP, one starting or
/// to be started); `Some(true)` when a backend is still to be started for it.
pub fn would_hold(upstream: &UpstreamRuntime) -> Option<bool> {
    let shared = upstream.shared();
    match verdict(upstream, shared.failed_starts()) {
        HoldVerdict::Wait { start } => Some(start),
        _ => None,
    }
}

/// Starts a backend for a request held from the balancer, as the gate does for the requests
/// it holds (unless one is starting already).
pub fn start_for_held(upstream: &'static UpstreamRuntime) {
    start_one(upstream);
}

/// Holds `r` again in the place reserved for it; its upstream attempt is over. With
/// `retry_after_ms`, it goes on after that long whatever happened (if still held): the gate
/// then looks again. `why` ends the debug line.
///
/// # Safety
/// `r` must be the live request the place was reserved for.
pub unsafe fn hold_again(
    r: *mut ngx_http_request_t,
    upstream: &'static UpstreamRuntime,
    place: HoldAgain,
    retry_after_ms: Option<u64>,
    why: &str,
) {
    // SAFETY: caller's contract; the record lives in the request's pool.
    unsafe {
        (*r).phase_handler = place.gate_phase as _;
        (*place.held).failures_seen = place.failures_seen;
        (*place.held).hold_began_ms = now_ms();
        upstream.held.push(&mut *place.held);
        start_hold(r, upstream);
        // A main request held by the gate keeps its hold deadline on its connection: its
        // record's own timer is free for the retry. Its pool cleanup deletes the timer should
        // the request be freed first.
        let retry: *mut ngx_event_t = &mut (*place.held).deadline;
        match retry_after_ms {
            Some(ms) => {
                (*retry).handler = Some(on_retry);
                (*retry).data = place.held as *mut c_void;
                (*retry).log = (*(*r).connection).log;
                ngx_add_timer(retry, ms as _);
            }
            None if (*retry).timer_set() != 0 => ngx_del_timer(retry),
            None => {}
        }
    }
    ngx::ngx_log_debug!(
        // SAFETY: as above.
        unsafe { Request::from_ngx_http_request(r) }.log(),
        "supervisord: upstream \"{}\": {}, holding it again, {} held in all workers",
        upstream.name(),
        why,
        upstream.shared().held()
    );
}

/// The retry of a request held again for a short while (`hold_again`): it goes on, through
/// the gate, if it is still held.
unsafe extern "C" fn on_retry(event: *mut ngx_event_t) {
    // SAFETY: the event's data is its record, alive while its timer is set (the record's pool
    // cleanup deletes it); its request is live.
    let held = unsafe { &mut *((*event).data as *mut HeldRequest) };
    if !held.is_held() {
        return;
    }
    release(held);
    // SAFETY: the request was held (by the gate, its phases set back to it) and is live.
    unsafe { go_on(held) };
}

/// The gate's index in nginx's phase engine, where a request held again resumes.
fn gate_phase(r: *mut ngx_http_request_t) -> Option<ngx_uint_t> {
    // SAFETY: a live request's main conf of the core module is set.
    let core = NgxHttpCoreModule::main_conf(unsafe { &*r })?;
    let handlers = core.phase_engine.handlers;
    if handlers.is_null() {
        return None;
    }
    let gate_fn: unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t = gate;
    let mut index = 0;
    // SAFETY: nginx ends the array with an entry without a checker.
    unsafe {
        while (*handlers.add(index)).checker.is_some() {
            if (*handlers.add(index))
                .handler
                .map(|handler| handler as usize)
                == Some(gate_fn as usize)
            {
                return Some(index as ngx_uint_t);
            }
            index += 1;
        }
    }
    None
}

/// The request's held record: its module context, made (with a pool cleanup that takes it off
/// the queue should the request be freed while held) the first time the request is held.
/// Null when out of memory.
fn held_request(request: &mut Request, upstream: &'static UpstreamRuntime) -> *mut HeldRequest {
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
    // SAFETY: caller's contract.
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the context, when set, is this request's record in its pool.
    let Some(record) = (unsafe { held_context(request).as_mut() }) else {
        return;
    };
    let Some(from_ms) = record.cold_start_from_ms else {
        return;
    };
    // SAFETY: caller's contract: the upstream and its state (the attempt's) are live.
    let Some(state) = (unsafe { (*(*r).upstream).state.as_ref() }) else {
        return;
    };
    if state.header_time == ngx_msec_t::MAX {
        // No header from this attempt (refused, reset, timed out): the next one may have it.
        return;
    }
    // SAFETY: as above.
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

/// The request's module context: its held record, or null before it was first held.
fn held_context(request: &Request) -> *mut HeldRequest {
    let raw: &ngx_http_request_t = request.as_ref();
    // SAFETY: a live request has one context slot per http module.
    unsafe { *raw.ctx.add(Module::module().ctx_index) as *mut HeldRequest }
}

/// The `Retry-After` of every 503 the gate answers.
const RETRY_AFTER: &[(&str, &str)] = &[("Retry-After", "1")];

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
    // SAFETY: as above.
    if unsafe { (*wev).delayed() } != 0 {
        // SAFETY: as above.
        if unsafe { ngx_handle_write_event(wev, 0) } != NGX_OK as ngx_int_t {
            // SAFETY: as above.
            unsafe { ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t) };
        }
        return;
    }
    // SAFETY: as above.
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the context, when set, is this request's record in its pool; only this thread
    // touches it.
    let Some(held) = (unsafe { held_context(request).as_mut() }) else {
        // SAFETY: as above.
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
    // SAFETY: caller's contract.
    let request = unsafe { Request::from_ngx_http_request(held.request) };
    ngx::ngx_log_error!(
        NGX_LOG_WARN,
        request.log(),
        "supervisord: upstream \"{}\": no backend up within {} ms, request not held longer",
        upstream.name,
        upstream.hold_timeout_ms()
    );
    let rc = error_status(request, NGX_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER);
    // SAFETY: caller's contract; its hold just ended.
    unsafe { answer(held, rc) };
}

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
                // SAFETY: as above.
                unsafe { answer(held, NGX_HTTP_BAD_GATEWAY as ngx_int_t) };
            }
            HoldVerdict::BackingOff { retry_after_ms } => {
                held.let_go(now_ms());
                failed += 1;
                // SAFETY: the request is held and live.
                let request = unsafe { Request::from_ngx_http_request(r) };
                let rc = backing_off(request, upstream, retry_after_ms);
                // SAFETY: as above.
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
/// `core::refused_attempt`): until then its backend may show UP but fail it again.
fn awaiting_check(upstream: &UpstreamRuntime, held: &mut HeldRequest) -> bool {
    let Some(index) = held.awaiting_check else {
        return false;
    };
    if upstream.failure_checks.borrow()[index] {
        return true;
    }
    held.awaiting_check = None;
    false
}

/// # Safety
/// `r` must be live and held.
unsafe fn stop_hold_timer(r: *mut ngx_http_request_t) {
    // SAFETY: caller's contract; its write event carries the hold deadline.
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
unsafe fn go_on(held: &mut HeldRequest) {
    if held.paused_in_peer_init {
        held.paused_in_peer_init = false;
        // SAFETY: caller's contract: paused by peer.init, which only happens with the patch.
        unsafe { init_busy::resume(held.request, NGX_OK as ngx_int_t) };
    } else {
        // SAFETY: caller's contract.
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
        // SAFETY: as in go_on; the patch's resume finalizes the upstream request with rc.
        unsafe { init_busy::resume(held.request, rc) };
    } else {
        // SAFETY: caller's contract.
        unsafe { end_with(held.request, rc) };
    }
}

/// # Safety
/// `r` must be live and held.
unsafe fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: caller's contract; re-running its phases lets the gate see the UP backend.
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
    // SAFETY: caller's contract.
    unsafe {
        stop_hold_timer(r);
        let connection = (*r).connection;
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(connection);
    }
}
