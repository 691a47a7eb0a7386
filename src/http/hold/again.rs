//! Holding again. A request whose backend refused its connection before anything was sent, or
//! for which the balancer finds no backend UP (every backend went away, as in a supervisord
//! restart), is, when `core::hold::refused_attempt` says so, held again instead of answered
//! 502: the balancer reserves a place (`reserve_hold_again`), ends the failed upstream attempt,
//! then hands the request back (`hold_again`), its phases set back to the gate so that, once a
//! backend is UP, the gate lets it through and the content handler sends it again.

use std::ffi::c_void;
use std::ptr;

use nginx_sys::{
    ngx_add_timer, ngx_del_timer, ngx_event_t, ngx_http_request_t, ngx_int_t, ngx_msec_t,
    ngx_uint_t, NGX_DECLINED,
};
use nginx_sys::{
    ngx_close_connection, ngx_current_msec, ngx_destroy_pool, ngx_peer_connection_t,
    NGX_HTTP_UPSTREAM_FT_ERROR,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};

use super::gate::gate;
use super::record::{held_context, held_request, release};
use super::verdict::{start_for_held, would_hold};
use super::wake::go_on;
use super::wake::start_hold;
use crate::core::backend_status::BackendStatus;
use crate::core::hold::refused_attempt::{
    self, hold_counts, no_peer_verdict, EarlierAttempts, FailedAttempt, NoPeerLeft, NoPeerVerdict,
};
use crate::module_type::Module;
use crate::runtime::{HeldRequest, UpstreamRuntime};
use crate::util::time::now_ms;

// Holding again. A request whose backend refused its connection before anything was sent is,
// when `core::hold::refused_attempt` says so, held again instead of answered 502: the balancer
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
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn gate_covers(r: *mut ngx_http_request_t, upstream: &UpstreamRuntime) -> bool {
    // SAFETY: `r` is live (this fn's contract).
    let request = unsafe { Request::from_ngx_http_request(r) };
    Module::location_conf(request)
        .and_then(|location| location.held_upstream())
        .is_some_and(|conf| std::ptr::eq(conf, upstream.conf))
}

/// How many times `r` was held again already.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn times_held_again(r: *mut ngx_http_request_t) -> u32 {
    // SAFETY: `r` is live (this fn's contract).
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: the context, when set, is this request's record in its pool.
    unsafe { held_context(request).as_ref() }.map_or(0, |held| held.times_held_again)
}

/// Reserves a place for `r` among the held requests (within `supervisord_hold_limit`);
/// `None` when there is none, or the gate's phase cannot be found. A hold that is `counted`
/// adds to the times `r` was held again (`core::hold::refused_attempt::hold_counts`).
///
/// # Safety
/// `r` must be a live main request whose location the gate covers.
pub unsafe fn reserve_hold_again(
    r: *mut ngx_http_request_t,
    upstream: &'static UpstreamRuntime,
    awaiting_check: Option<usize>,
    counted: bool,
) -> Option<HoldAgain> {
    // SAFETY: `r` is a live main request (this fn's contract).
    let request = unsafe { Request::from_ngx_http_request(r) };
    // SAFETY: `r` is a live main request (this fn's contract).
    let gate_phase = unsafe { gate_phase(r) }?;
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
    // SAFETY: `r` is the live request `place` was reserved for (this fn's contract), its record
    // non-null in r's pool; it is queued before `start_hold`, as that requires.
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
        // SAFETY: `r` is still the live request: holding it again freed nothing.
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
///
/// # Safety
/// `r` must be a live request.
unsafe fn gate_phase(r: *mut ngx_http_request_t) -> Option<ngx_uint_t> {
    // SAFETY: `r` is live (this fn's contract); a live request's main conf of the core module
    // is set.
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

/// What the balancer knows of a request's upstream attempts so far.
pub struct AttemptsSoFar {
    pub request: *mut ngx_http_request_t,
    /// What its attempts showed (none before its first).
    pub earlier: Option<EarlierAttempts>,
    /// The backend of its last failed attempt.
    pub last_failed: Option<usize>,
    /// Its last failed attempt was on a cached keepalive connection.
    pub last_failure_cached: bool,
}

/// A request for which nginx asks a peer when none is UP is held (again), when
/// `core::hold::refused_attempt::no_peer_verdict` says so, rather than answered "no live
/// upstreams". True when it was: its attempt is then ended, as after a refused attempt.
///
/// # Safety
/// `pc` must be the peer connection of the context's live request, from within nginx's
/// `peer.get`, holding no peer and no connection.
pub unsafe fn hold_instead_of_no_peer(
    attempts: &AttemptsSoFar,
    pc: &mut ngx_peer_connection_t,
    upstream: &'static UpstreamRuntime,
) -> bool {
    let r = attempts.request;
    // SAFETY: `pc` is the peer connection of the context's live request, in peer.get (this
    // fn's contract), so `r` is live; only this worker's thread touches it.
    let request = unsafe { &mut *r };
    let gate_would_hold = would_hold(upstream);
    let pending_check = upstream
        .backends
        .iter()
        .position(|backend| backend.failure_check.get());
    let facts = NoPeerLeft {
        earlier: attempts.earlier,
        main_request: ptr::eq(request.main, r),
        body_kept: request.request_body_no_buffering() == 0,
        // SAFETY: the request's connection is live.
        client_gone: unsafe { (*request.connection).error() } != 0,
        // SAFETY: the live request's upstream, whose peer.get runs (this fn's contract).
        stale_cache_answer: unsafe { stale_cache_answer(&*request.upstream) },
        // SAFETY: `r` is live (this fn's contract).
        gate_covers: unsafe { gate_covers(r, upstream) },
        // SAFETY: as for `gate_covers`: `r` is live.
        times_held_again: unsafe { times_held_again(r) },
        gate_would_hold: gate_would_hold.is_some(),
        check_pending: pending_check.is_some(),
        failed_backend_left_up: attempts.last_failed.is_some_and(|failed| {
            upstream.shared().backend(failed).status() == BackendStatus::Up
                && !upstream.backends[failed].failure_check.get()
        }),
        last_failure_cached: attempts.last_failure_cached,
    };
    let verdict = no_peer_verdict(&facts);
    ngx::ngx_log_debug!(
        // SAFETY: `r` is live (this fn's contract: nginx's peer.get for it runs).
        unsafe { ngx::http::Request::from_ngx_http_request(r) }.log(),
        "supervisord: upstream \"{}\": no backend up for the request in the balancer: {:?}: {:?}",
        upstream.name(),
        facts,
        verdict
    );
    let (retry_after_ms, why) = match verdict {
        NoPeerVerdict::Answer => return false,
        NoPeerVerdict::Hold => (None, "no backend up for it in the balancer"),
        NoPeerVerdict::RetryAfter(ms) => (
            Some(ms),
            "its backend failed it but accepts connections, sending it again shortly",
        ),
    };
    // With a backend still UP, the request waits for the check that finds out about it.
    let awaiting_check = if facts.gate_would_hold {
        None
    } else {
        pending_check
    };
    let counted = hold_counts(&facts);
    // SAFETY: a main request the gate covers (checked above).
    let Some(place) = (unsafe { reserve_hold_again(r, upstream, awaiting_check, counted) }) else {
        return false;
    };
    // Nothing for nginx to free or retry: no peer, no cached connection to count again.
    pc.sockaddr = ptr::null_mut();
    pc.set_cached(0);
    // SAFETY: in nginx's peer.get for live `r`, `pc` its peer connection (this fn's contract),
    // as end_attempt needs; `place` was just reserved for `r`, as hold_again needs.
    unsafe {
        end_attempt(r, pc);
        hold_again(r, upstream, place, retry_after_ms, why);
    }
    if gate_would_hold == Some(true) {
        start_for_held(upstream);
    }
    true
}

/// Whether nginx may answer `u`'s request from a stale cache entry instead.
///
/// # Safety
/// `u` must be a live request's upstream.
pub unsafe fn stale_cache_answer(u: &nginx_sys::ngx_http_upstream_t) -> bool {
    #[cfg(ngx_feature = "http_cache")]
    {
        u.cache_status() == nginx_sys::NGX_HTTP_CACHE_EXPIRED
    }
    #[cfg(not(ngx_feature = "http_cache"))]
    {
        let _ = u;
        false
    }
}

/// A request its backend failed before answering (a refused connect, a reset) is held again
/// rather than answered 502, when `core::hold::refused_attempt::hold_again` says so (nginx has no
/// try left for it; with one left, `get_peer` decides). nginx goes on from here to finalize
/// the upstream attempt, which this has done already: it then only drops the reference taken
/// here.
///
/// # Safety
/// `r` must be the live request whose peer `pc` nginx is handing back after a failure (from
/// `ngx_http_upstream_next`), the inner balancer having had it back.
pub unsafe fn hold_again_if_refused(
    r: *mut ngx_http_request_t,
    pc: &mut ngx_peer_connection_t,
    upstream: &'static UpstreamRuntime,
    backend: usize,
    seen: EarlierAttempts,
) {
    // SAFETY: nginx hands `r`'s peer back from ngx_http_upstream_next (this fn's contract),
    // so `r` and `r->upstream` are live.
    let (request, u) = unsafe { (&mut *r, &mut *(*r).upstream) };
    // SAFETY: the upstream's conf is set for as long as the upstream.
    let next_upstream = unsafe { (*u.conf).next_upstream };
    let attempt = FailedAttempt {
        nothing_sent: seen.nothing_sent,
        resend_allowed: seen.resend_allowed,
        nothing_received: seen.nothing_received,
        timed_out: seen.timed_out,
        nginx_gives_up: pc.tries == 0
            || next_upstream & NGX_HTTP_UPSTREAM_FT_ERROR as ngx_uint_t == 0,
        main_request: ptr::eq(request.main, r),
        body_kept: request.request_body_no_buffering() == 0,
        // SAFETY: the request's connection is live.
        client_gone: unsafe { (*request.connection).error() } != 0,
        cached_connection: pc.cached() != 0,
        // SAFETY: `u` is the live request's upstream (this fn's contract).
        stale_cache_answer: unsafe { stale_cache_answer(u) },
        // SAFETY: `r` is live (this fn's contract).
        gate_covers: unsafe { gate_covers(r, upstream) },
        // SAFETY: as for `gate_covers`: `r` is live.
        times_held_again: unsafe { times_held_again(r) },
        backend_up: upstream.shared().backend(backend).status() == BackendStatus::Up,
        check_pending: upstream.backends[backend].failure_check.get(),
    };
    if !refused_attempt::hold_again(&attempt) {
        return;
    }
    let awaiting_check = attempt.check_pending.then_some(backend);
    // SAFETY: a main request the gate covers (checked above).
    let Some(place) = (unsafe { reserve_hold_again(r, upstream, awaiting_check, true) }) else {
        return;
    };
    // SAFETY: nginx hands `pc`, live `r`'s failed peer, back before it finalizes the attempt
    // (this fn's contract), as end_attempt needs; `place` was reserved for `r` just above.
    unsafe {
        end_attempt(r, pc);
        hold_again(
            r,
            upstream,
            place,
            None,
            "backend failed the request before answering",
        );
    }
}

/// Ends the request's failed upstream attempt the way nginx's upstream finalization does, and
/// takes a reference on the request for nginx to drop: nginx then finds the attempt finalized
/// and only drops that reference. The content handler starts a new attempt when the request
/// goes through its phases again.
///
/// # Safety
/// `r` must be the live request whose peer connection `pc` is, inside nginx's upstream code
/// (handing a peer back after a failure, or asking for one) before it finalizes the attempt.
pub unsafe fn end_attempt(r: *mut ngx_http_request_t, pc: &mut ngx_peer_connection_t) {
    // SAFETY: `r` is live with its upstream, `pc` its peer connection, inside nginx's upstream
    // code before it finalizes the attempt (this fn's contract); `c` is the attempt's own.
    unsafe {
        let u = &mut *(*r).upstream;
        if !pc.connection.is_null() {
            let c = pc.connection;
            if !(*c).pool.is_null() {
                ngx_destroy_pool((*c).pool);
            }
            ngx_close_connection(c);
            pc.connection = ptr::null_mut();
        }
        if !u.cleanup.is_null() {
            *u.cleanup = None;
            u.cleanup = ptr::null_mut();
        }
        if let Some(state) = u.state.as_mut() {
            if state.response_time == ngx_msec_t::MAX {
                state.response_time = ngx_current_msec.wrapping_sub(u.start_time);
            }
        }
        if let Some(finalize) = u.finalize_request {
            finalize(r, NGX_DECLINED as ngx_int_t);
        }
        // No other peer: nginx goes straight to finalizing.
        pc.tries = 0;
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
    }
}
