//! Telling a C balancer's load monitor the load: every `supervisord_load_interval`, in one
//! worker (whichever takes the interval's turn in the shared zone), with the figures of the
//! interval just ended over all workers (`core::policy::balancer_api::load_figures`).
//!
//! ngx_supervisord 1.4 told the monitor in every worker, each with the global count of its
//! own window, so a balancer acting on the figures acted once per worker; here it acts once.

use nginx_sys::{ngx_add_timer, ngx_event_t, ngx_exiting, ngx_quit, ngx_terminate};

use crate::conf::balancer_hooks::LoadReport;
use crate::core::backend_status::BackendStatus;
use crate::core::policy::balancer_api::load_figures;
use crate::runtime::UpstreamRuntime;
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// How often a worker looks whether the interval's turn is due.
fn tick_ms(interval_ms: u64) -> u64 {
    (interval_ms / 10).clamp(50, 1_000)
}

/// Starts this worker's timer for an upstream whose balancer registered a load monitor.
pub fn start(upstream: &'static UpstreamRuntime) {
    if upstream.conf.hooks.load_monitor.is_none() {
        return;
    }
    let tick = tick_ms(upstream.conf.load_interval_ms());
    upstream.arm_timer(upstream.load_timer.get(), on_tick, tick, true);
}

unsafe extern "C" fn on_tick(event: *mut ngx_event_t) {
    // SAFETY: armed by `start`.
    let upstream = unsafe { UpstreamRuntime::of_timer(event) };
    // SAFETY: plain reads of nginx's process flags.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    let interval = upstream.conf.load_interval_ms();
    // SAFETY: re-arming our own event.
    unsafe { ngx_add_timer(event, tick_ms(interval) as _) };
    report(upstream, interval);
}

fn report(upstream: &'static UpstreamRuntime, interval_ms: u64) {
    let Some(monitor) = upstream.conf.hooks.load_monitor else {
        return;
    };
    let shared = upstream.shared();
    let now = now_ms();
    let requests: u64 = shared.backends().iter().map(|b| b.requests()).sum();
    let Some((last, requests_then)) = shared.take_load_report(now, interval_ms, requests) else {
        return;
    };
    if last == 0 {
        // The first turn only starts the first interval.
        return;
    }
    let up = shared
        .backends()
        .iter()
        .filter(|backend| backend.status() == BackendStatus::Up)
        .count() as u64;
    let figures = load_figures(
        requests.saturating_sub(requests_then),
        now.saturating_sub(last),
        up,
        shared.backends().len() as u64,
    );
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\": telling the balancer the load: {:?}",
        upstream.name(),
        figures
    );
    // SAFETY: the balancer registered this callback for this upstream's srv conf, which lives
    // as long as the configuration; its contract is ngx_supervisord.h's.
    unsafe { monitor(upstream.conf.upstream, LoadReport::from(figures)) };
}
