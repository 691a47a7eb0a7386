//! The hold gate: a precontent-phase handler on locations that pass requests to an upstream
//! managed through supervisord. When no backend is UP it makes sure one is starting (the first
//! DOWN one) and holds the request, in whichever worker it arrived, until a backend is UP; the
//! request then goes on to the balancer as usual.
//!
//! Held requests wake by event: while a worker holds any, it looks at the upstream's shared
//! generation every `WAKE_TICK_MS` (one atomic load) and re-evaluates its waiters only when it
//! moved. Bounds: `supervisord_hold_limit` requests over all workers (503 beyond), and
//! `supervisord_hold_timeout` each (503 then). A failed start gives every held request 502 at once.

use std::ffi::c_void;

use nginx_sys::{
    ngx_add_timer, ngx_cycle, ngx_del_timer, ngx_event_t, ngx_handle_write_event,
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_request_t,
    ngx_http_run_posted_requests, ngx_http_test_reading, ngx_int_t, ngx_pcalloc,
    ngx_pool_cleanup_add, NGX_AGAIN, NGX_DECLINED, NGX_ERROR, NGX_HTTP_BAD_GATEWAY,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_WARN,
};
use ngx::http::HttpModuleLocationConf;

use crate::commander::{self, now_ms};
use crate::conf::UpstreamConf;
use crate::core::backend_status::{BackendStatus, Command};
use crate::core::commands::{decide, select_backend, Decision};
use crate::core::control_uri::BackendSelector;
use crate::http_reply::send_text;
use crate::module::Module;
use crate::shared_zone::ZoneLock;

const WAKE_TICK_MS: usize = 2;

/// One held request, in its own pool.
pub struct HoldContext {
    request: *mut ngx_http_request_t,
    upstream: &'static UpstreamConf,
    /// The shared failed-start count when the request was held.
    failures_seen: u64,
    /// Still counted as held (in the waiters list and the shared count).
    active: bool,
}

enum Verdict {
    /// A backend is UP: go on to the balancer.
    Proceed,
    /// The start this request waited for failed and nothing else is starting.
    StartFailed,
    /// Wait; a start is under way.
    Wait,
}

fn evaluate(upstream: &'static UpstreamConf, failures_seen: u64) -> Verdict {
    let shared = upstream.shared();
    // The common case, on every request: some backend is up.
    let backends = shared.backends();
    if backends
        .iter()
        .any(|backend| backend.status().takes_requests())
    {
        return Verdict::Proceed;
    }
    let starting = backends
        .iter()
        .any(|backend| backend.status() == BackendStatus::StartingUp);
    if !starting && shared.failed_starts() != failures_seen {
        return Verdict::StartFailed;
    }
    if !starting {
        start_one(upstream);
    }
    Verdict::Wait
}

/// Starts the first DOWN backend, unless another worker got there first.
fn start_one(upstream: &'static UpstreamConf) {
    let lock = ZoneLock::new(upstream);
    let statuses = upstream.shared().statuses();
    if statuses
        .iter()
        .any(|status| matches!(status, BackendStatus::Up | BackendStatus::StartingUp))
    {
        return;
    }
    let Ok(index) = select_backend(Command::Start, BackendSelector::Any, &statuses) else {
        return;
    };
    let Decision::Apply { status, .. } = decide(Command::Start, statuses[index], upstream.mode())
    else {
        return;
    };
    lock.begin_command(index, status, now_ms());
    drop(lock);
    commander::execute(upstream, index, Command::Start);
}

/// The precontent-phase handler.
pub unsafe extern "C" fn gate(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx runs phase handlers with a live request.
    let request = unsafe { &mut *r };
    let Some(location) = Module::location_conf(request) else {
        return NGX_DECLINED as ngx_int_t;
    };
    if location.held_upstream.is_null() || request.main != r {
        return NGX_DECLINED as ngx_int_t;
    }
    // SAFETY: set at configuration time to an upstream conf of this cycle.
    let upstream: &'static UpstreamConf = unsafe { &*location.held_upstream };
    let failures_seen = upstream.shared().failed_starts();
    match evaluate(upstream, failures_seen) {
        Verdict::Proceed => return NGX_DECLINED as ngx_int_t,
        // Only reachable if a start failed between the two loads above; answer as a waiter would.
        Verdict::StartFailed => return NGX_HTTP_BAD_GATEWAY as ngx_int_t,
        Verdict::Wait => {}
    }
    if !upstream.shared().try_hold(upstream.hold_limit()) {
        let log = request_log(r);
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "supervisord: upstream \"{}\": {} requests held already, refusing one more",
            upstream.name,
            upstream.hold_limit()
        );
        // SAFETY: r is live and has sent nothing.
        return unsafe { refuse(r, upstream, "too many requests are waiting for a backend") };
    }
    // SAFETY: r is live; its pool holds the context as long as the request.
    unsafe { hold(r, upstream, failures_seen) }
}

unsafe fn hold(
    r: *mut ngx_http_request_t,
    upstream: &'static UpstreamConf,
    failures_seen: u64,
) -> ngx_int_t {
    // SAFETY: r is live (caller's contract).
    unsafe {
        let context =
            ngx_pcalloc((*r).pool, std::mem::size_of::<HoldContext>()) as *mut HoldContext;
        let cleanup = ngx_pool_cleanup_add((*r).pool, 0);
        if context.is_null() || cleanup.is_null() {
            upstream.shared().release_hold();
            return NGX_ERROR as ngx_int_t;
        }
        context.write(HoldContext {
            request: r,
            upstream,
            failures_seen,
            active: true,
        });
        // A client that goes away frees the request: the cleanup takes it off the list.
        (*cleanup).handler = Some(on_request_freed);
        (*cleanup).data = context as *mut c_void;
        upstream.waiters.borrow_mut().push(context);
        arm_wake_timer(upstream);

        (*r).read_event_handler = Some(ngx_http_test_reading);
        (*r).write_event_handler = Some(on_hold_write_event);
        // The write event's timer is the hold deadline; it also keeps a gracefully exiting
        // worker (after a reload) alive until the request is answered.
        let wev = (*(*r).connection).write;
        (*wev).set_delayed(1);
        ngx_add_timer(wev, upstream.hold_timeout_ms() as _);
    }
    NGX_AGAIN as ngx_int_t
}

fn request_log(r: *mut ngx_http_request_t) -> *mut nginx_sys::ngx_log_t {
    // SAFETY: a live request has a connection with a log.
    unsafe { (*(*r).connection).log }
}

unsafe fn refuse(r: *mut ngx_http_request_t, upstream: &UpstreamConf, why: &str) -> ngx_int_t {
    let body = format!("503: {why} (upstream \"{}\")\n", upstream.name);
    // SAFETY: r is live and has sent nothing (caller's contract).
    unsafe {
        send_text(
            r,
            NGX_HTTP_SERVICE_UNAVAILABLE,
            &body,
            &[("Retry-After", "1")],
        )
    }
}

/// Takes the request off this worker's list and the shared count, once.
fn release(context: &mut HoldContext) {
    if !context.active {
        return;
    }
    context.active = false;
    let me = context as *mut HoldContext;
    context
        .upstream
        .waiters
        .borrow_mut()
        .retain(|waiter| *waiter != me);
    context.upstream.shared().release_hold();
}

unsafe extern "C" fn on_request_freed(data: *mut c_void) {
    // SAFETY: the cleanup's data is the request's hold context, freed with the same pool.
    release(unsafe { &mut *(data as *mut HoldContext) });
}

/// The held request's write event: either spurious (the connection became writable) or the
/// hold deadline. nginx clears `delayed` (and `timedout`) of a delayed event whose timer
/// expired before calling this, so a still-delayed event is a spurious one.
unsafe extern "C" fn on_hold_write_event(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the live, held request.
    unsafe {
        let wev = (*(*r).connection).write;
        if (*wev).delayed() != 0 {
            if ngx_handle_write_event(wev, 0) != nginx_sys::NGX_OK as isize {
                ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
            }
            return;
        }
        let Some(context) = find_context(r) else {
            ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
            return;
        };
        let upstream = (*context).upstream;
        release(&mut *context);
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            request_log(r),
            "supervisord: upstream \"{}\": no backend up within {} ms, request not held longer",
            upstream.name,
            upstream.hold_timeout_ms()
        );
        let rc = refuse(r, upstream, "no backend came up in time");
        ngx_http_finalize_request(r, rc);
    }
}

fn find_context(r: *mut ngx_http_request_t) -> Option<*mut HoldContext> {
    // SAFETY: the request's location conf names the upstream whose list holds it.
    let request = unsafe { &*r };
    let location = Module::location_conf(request)?;
    if location.held_upstream.is_null() {
        return None;
    }
    // SAFETY: set at configuration time.
    let upstream = unsafe { &*location.held_upstream };
    let waiters = upstream.waiters.borrow();
    waiters
        .iter()
        .copied()
        // SAFETY: listed contexts are live (their requests remove them when freed).
        .find(|context| unsafe { (**context).request } == r)
}

fn arm_wake_timer(upstream: &'static UpstreamConf) {
    let event = upstream.wake_timer.get();
    // SAFETY: the event lives in the upstream conf; only this worker's thread touches it.
    unsafe {
        if (*event).timer_set() != 0 {
            return;
        }
        if (*event).handler.is_none() {
            (*event).handler = Some(on_wake_tick);
            (*event).data = upstream as *const UpstreamConf as *mut c_void;
            (*event).log = (*ngx_cycle).log;
            upstream.wake_seen_generation.set(0);
        }
        ngx_add_timer(event, WAKE_TICK_MS);
    }
}

unsafe extern "C" fn on_wake_tick(event: *mut ngx_event_t) {
    // SAFETY: the timer's data is its upstream conf.
    let upstream: &'static UpstreamConf = unsafe { &*((*event).data as *const UpstreamConf) };
    let generation = upstream.shared().generation();
    if generation != upstream.wake_seen_generation.get() {
        upstream.wake_seen_generation.set(generation);
        wake_waiters(upstream);
    }
    if !upstream.waiters.borrow().is_empty() {
        // SAFETY: re-arming our own event.
        unsafe { ngx_add_timer(event, WAKE_TICK_MS) };
    }
}

fn wake_waiters(upstream: &'static UpstreamConf) {
    let waiting: Vec<*mut HoldContext> = upstream.waiters.borrow().clone();
    for context in waiting {
        // SAFETY: a context still listed belongs to a live request; an earlier iteration may
        // have released it (a resumed request finalized another), so check before use.
        let context = unsafe { &mut *context };
        if !context.active {
            continue;
        }
        let r = context.request;
        match evaluate(upstream, context.failures_seen) {
            Verdict::Wait => continue,
            Verdict::Proceed => {
                release(context);
                // SAFETY: the request is held (suspended in its phase loop) and live.
                unsafe { resume(r) };
            }
            Verdict::StartFailed => {
                release(context);
                // SAFETY: as above; the commander logged why the start failed.
                unsafe { end_with(r, NGX_HTTP_BAD_GATEWAY as ngx_int_t) };
            }
        }
    }
}

unsafe fn stop_hold_timer(r: *mut ngx_http_request_t) {
    // SAFETY: r is live; its write event carries the hold deadline.
    unsafe {
        let wev = (*(*r).connection).write;
        if (*wev).timer_set() != 0 {
            ngx_del_timer(wev);
        }
        (*wev).set_delayed(0);
    }
}

unsafe fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: r is live and held; re-running its phases lets the gate see the UP backend.
    unsafe {
        stop_hold_timer(r);
        let connection = (*r).connection;
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(connection);
    }
}

unsafe fn end_with(r: *mut ngx_http_request_t, rc: ngx_int_t) {
    // SAFETY: r is live and held.
    unsafe {
        stop_hold_timer(r);
        let connection = (*r).connection;
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(connection);
    }
}
