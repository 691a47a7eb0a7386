//! What a request finds when it comes for a managed upstream (`core::hold::hold_verdict`): on
//! to a backend UP, an answer at once (a failed start, every backend backing off), or a wait
//! for a start, which it sets off if none is under way (the first DOWN backend not waiting out
//! a start backoff, on a host that answers). A backend waiting out its start backoff (a crash
//! loop, `core::start::start_backoff`) is not started on demand: another DOWN backend is, and
//! when every DOWN backend waits, requests get 503 with `Retry-After` (the shortest wait left)
//! at once, without a start.

use nginx_sys::{ngx_int_t, NGX_HTTP_BAD_GATEWAY, NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_NOTICE};
use ngx::http::Request;

use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::Command;
use crate::core::hold::hold_verdict::{backend_to_start, hold_verdict, BackendView, HoldVerdict};
use crate::core::machine::Event;
use crate::core::start::start_watch::PendingStart;
use crate::runtime::UpstreamRuntime;
use crate::shared::records::SharedBackend;
use crate::supervisord::commander;
use crate::util::log::cycle_log;
use crate::util::reply::error_status;
use crate::util::time::now_ms;

/// The `Retry-After` of every 503 the gate answers.
pub(super) const RETRY_AFTER: &[(&str, &str)] = &[("Retry-After", "1")];

fn view(backend: &SharedBackend, now: u64) -> BackendView {
    BackendView::new(backend.status(), backend.start_backoff().wait_left_ms(now))
        .with_program_missing(backend.program_missing())
}

pub(super) fn verdict(upstream: &UpstreamRuntime, failures_seen: u64) -> HoldVerdict {
    let shared = upstream.shared();
    let now = now_ms();
    hold_verdict(
        shared.backends().iter().map(|backend| view(backend, now)),
        shared.failed_starts(),
        failures_seen,
    )
}

/// The 503 for a request that finds every DOWN backend waiting out its start backoff.
pub(super) fn backing_off(
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
/// answers, the least busy: `core::policy::placement`), unless another worker got there first.
pub(super) fn start_one(upstream: &'static UpstreamRuntime) {
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

/// What a request that finds its upstream in the gate (or in peer.init) does now.
pub(super) enum HoldStep {
    /// A backend is UP: on to it.
    Proceed,
    /// Answered at once with this status (a failed start, every backend backing off).
    Answer(ngx_int_t),
    /// To be held (a start is under way, set off here if need be).
    Hold,
}

/// Decides what a request for `upstream` does (`core::hold::hold_verdict`), and starts a backend
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
