//! Reconciliation: every `supervisord_sync_interval`, one worker (whichever takes the turn in
//! the shared zone) reads supervisord's view of all programs and brings the statuses in line:
//! a backend killed or stopped outside nginx goes DOWN, one started by hand goes UP.

use std::cell::RefCell;
use std::ffi::c_void;

use nginx_sys::{
    ngx_add_timer, ngx_cycle, ngx_event_t, ngx_exiting, ngx_quit, ngx_terminate, NGX_LOG_ERR,
    NGX_LOG_NOTICE,
};

use crate::commander::now_ms;
use crate::conf::UpstreamConf;
use crate::core::call_outcome::CallError;
use crate::core::process_state::{parse_all_process_info, program_name, reconciled_status};
use crate::core::xmlrpc::Value;
use crate::shared_zone::ZoneLock;
use crate::supervisord_client;

struct SyncTimer {
    upstream: &'static UpstreamConf,
    event: ngx_event_t,
    last_error: RefCell<Option<String>>,
}

/// Starts this worker's reconciliation timer for a supervised upstream.
pub fn start(upstream: &'static UpstreamConf) {
    let interval = upstream.sync_interval_ms();
    if interval == 0 || upstream.supervisord.is_none() {
        return;
    }
    // The timer lives as long as the worker.
    let timer = Box::leak(Box::new(SyncTimer {
        upstream,
        // SAFETY: zeroed is a valid unset event.
        event: unsafe { std::mem::zeroed() },
        last_error: RefCell::new(None),
    }));
    timer.event.handler = Some(on_timer);
    timer.event.data = timer as *mut SyncTimer as *mut c_void;
    // SAFETY: the cycle's log is valid in a worker.
    timer.event.log = unsafe { (*ngx_cycle).log };
    // Does not keep a gracefully exiting worker alive.
    timer.event.set_cancelable(1);
    // SAFETY: the event is 'static.
    unsafe { ngx_add_timer(&mut timer.event, interval as _) };
}

unsafe extern "C" fn on_timer(event: *mut ngx_event_t) {
    // SAFETY: the event's data is its leaked SyncTimer.
    let timer: &'static SyncTimer = unsafe { &*((*event).data as *const SyncTimer) };
    // SAFETY: plain reads of nginx's process flags.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    let upstream = timer.upstream;
    let interval = upstream.sync_interval_ms();
    // SAFETY: re-arming our own 'static event.
    unsafe { ngx_add_timer(event, interval as _) };
    if !upstream.shared().take_sync_turn(now_ms(), interval) {
        return;
    }
    supervisord_client::call(
        upstream,
        "supervisor.getAllProcessInfo",
        &[],
        Box::new(move |result| apply(timer, result)),
    );
}

fn apply(timer: &SyncTimer, result: Result<Value, CallError>) {
    let upstream = timer.upstream;
    // SAFETY: the cycle's log is valid in a worker.
    let log = unsafe { (*ngx_cycle).log };
    let processes = match result
        .map_err(|e| e.to_string())
        .and_then(|v| parse_all_process_info(&v))
    {
        Ok(processes) => processes,
        Err(error) => {
            if timer.last_error.borrow().as_deref() != Some(error.as_str()) {
                ngx::ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "supervisord: upstream \"{}\": reading program states from {} failed: {}",
                    upstream.name,
                    upstream
                        .supervisord
                        .as_ref()
                        .map(|e| e.display.as_str())
                        .unwrap_or("?"),
                    error
                );
                *timer.last_error.borrow_mut() = Some(error);
            }
            return;
        }
    };
    if timer.last_error.borrow_mut().take().is_some() {
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "supervisord: upstream \"{}\": reading program states works again",
            upstream.name
        );
    }
    let now = now_ms();
    // A command whose worker vanished would hold its transitional status for ever.
    let stale_after = upstream.timeout_ms() * 2;
    let lock = ZoneLock::new(upstream);
    let mut changes = Vec::new();
    for index in 0..upstream.backends.len() {
        let program = program_name(upstream.program_prefix(), index);
        let observed = processes
            .iter()
            .find(|process| process.full_name == program)
            .map(|process| process.state);
        let current = lock.status(index);
        let stale = upstream
            .shared()
            .backend(index)
            .command_older_than(now, stale_after);
        if let Some(status) = reconciled_status(current, observed, stale) {
            lock.set_status(index, status);
            changes.push((index, program, current, status, observed));
        }
    }
    drop(lock);
    for (index, program, before, after, observed) in changes {
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} -> {} (supervisord says {})",
            upstream.name,
            index,
            upstream.backends[index].name,
            program,
            before,
            after,
            observed.map(|state| state.name()).unwrap_or("no such program")
        );
    }
}
