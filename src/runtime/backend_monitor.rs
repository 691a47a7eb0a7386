//! Telling a C balancer's backend monitor (C API) about status changes, in every worker: each
//! backend's status once when the worker starts, then each change, seen through the upstream's
//! shared generation when a request goes to the upstream and on a short timer (so that a
//! worker without traffic keeps its balancer's peers in step too).

use nginx_sys::{ngx_add_timer, ngx_event_t, ngx_uint_t};

use super::worker::UpstreamRuntime;
use crate::core::backend_status::BackendStatus;
use crate::util::log::cycle_log;

/// How often an idle worker looks for changes to tell.
const LOOK_INTERVAL_MS: u64 = 100;

/// Tells the upstream's backend monitor, if a balancer registered one, every backend whose
/// status differs from what this worker last told it.
pub fn tell_changes(upstream: &UpstreamRuntime) {
    let Some(monitor) = upstream.conf.hooks.backend_monitor else {
        return;
    };
    let shared = upstream.shared();
    let generation = shared.generation();
    let state = &upstream.monitor;
    if state.generation.get() == generation {
        return;
    }
    state.generation.set(generation);
    let changes: Vec<(usize, BackendStatus)> = shared
        .backends()
        .iter()
        .zip(upstream.backends.iter())
        .enumerate()
        .filter_map(|(index, (backend, mine))| {
            let status = backend.status();
            (mine.monitor_told.get() != Some(status)).then(|| {
                mine.monitor_told.set(Some(status));
                (index, status)
            })
        })
        .collect();
    // Called with nothing borrowed: a monitor may well call back into the C API.
    for (index, status) in changes {
        ngx::ngx_log_debug!(
            cycle_log(),
            "supervisord: upstream \"{}\": telling the balancer backend {} is {}",
            upstream.name(),
            index,
            status
        );
        // SAFETY: the balancer registered this callback for this upstream's srv conf, which
        // lives as long as the configuration; its contract is ngx_supervisord.h's.
        unsafe {
            monitor(
                upstream.conf.upstream,
                index as ngx_uint_t,
                status as ngx_uint_t,
            )
        };
    }
}

/// Tells the monitor the statuses as this worker starts, then looks for changes on a timer.
pub fn start(upstream: &'static UpstreamRuntime) {
    if upstream.conf.hooks.backend_monitor.is_none() {
        return;
    }
    tell_changes(upstream);
    upstream.arm_timer(
        upstream.monitor.timer.get(),
        on_timer,
        LOOK_INTERVAL_MS,
        true,
    );
}

unsafe extern "C" fn on_timer(event: *mut ngx_event_t) {
    // SAFETY: armed by `start`.
    let upstream = unsafe { UpstreamRuntime::of_timer(event) };
    tell_changes(upstream);
    // SAFETY: re-arming our own event.
    unsafe { ngx_add_timer(event, LOOK_INTERVAL_MS as _) };
}
