//! Reconciliation: every `supervisord_sync_interval`, one worker (whichever takes the turn in
//! the shared zone) reads supervisord's view of all programs and brings the statuses in line:
//! a backend killed or stopped outside nginx goes DOWN; a program found STARTING or RUNNING on
//! a backend that is not UP (a fresh shared state, a hand `start` or `restart`) is probed for
//! readiness like an on-demand start, so that requests wait for it and resume the moment it
//! listens, and nothing takes it for up (or failed) before (the plan itself is
//! `core::start::reconcile_plan`); one stopping outside nginx holds requests meanwhile.
//! A backend whose program supervisord does not have is reported at the first read, once.

use nginx_sys::{
    ngx_add_timer, ngx_event_t, ngx_exiting, ngx_quit, ngx_terminate, NGX_LOG_ERR, NGX_LOG_NOTICE,
};

use super::{client, readiness};
use crate::core::machine::{Action, Event, Sync, Tell};
use crate::core::protocol::call_outcome::CallError;
use crate::core::protocol::process_state::{
    find_process_detail, names_like, parse_all_process_info, process_named, ProcessInfo,
    ProcessState,
};
use crate::core::protocol::xmlrpc::Value;
use crate::core::start::reachability::failure_told_by_reachability;
use crate::runtime::{worker, Host, UpstreamRuntime};
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// Starts this worker's reconciliation timer for a supervised upstream. Its first tick comes
/// at once: the first worker of each configuration (start, reload) reads supervisord's view
/// right away, so statuses match supervisord's from the start (a reload that adds servers
/// routes their RUNNING programs at once), with or without `supervisord_sync_interval`.
pub fn start(upstream: &'static UpstreamRuntime) {
    // One read per supervisord, by the line that leads its host, for all its upstreams.
    for host in upstream.hosts() {
        if std::ptr::eq(host.upstream, upstream) {
            host.arm_sync_timer(on_timer, 1);
        }
    }
}

unsafe extern "C" fn on_timer(event: *mut ngx_event_t) {
    // SAFETY: armed by `start` with `arm_sync_timer`.
    let Some(host) = (unsafe { Host::of_timer(event) }) else {
        return;
    };
    // SAFETY: plain reads of nginx's process flags.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    let interval = host.upstream.conf.sync_interval_ms();
    if interval != 0 {
        // SAFETY: re-arming our own event.
        unsafe { ngx_add_timer(event, interval as _) };
    }
    let shared = host.shared();
    let now = now_ms();
    let first_read = shared.take_first_read(worker::generation(), now);
    if first_read || (interval != 0 && shared.take_sync_turn(now, interval)) {
        read_now(host);
    }
}

/// Reads supervisord's view now, whoever's turn it is (a new configuration's first read,
/// supervisord answering again after an outage), for every upstream line of `host`: one call,
/// whatever the number of upstreams that name this supervisord.
pub fn read_now(host: Host) {
    host.shared().note_sync(now_ms());
    let members: Vec<(&'static UpstreamRuntime, usize, Vec<u64>)> = host
        .members()
        .into_iter()
        .map(|(member, line)| {
            let changes = member
                .shared()
                .backends()
                .iter()
                .map(|backend| backend.changes())
                .collect();
            (member, line, changes)
        })
        .collect();
    client::call(
        host,
        "supervisor.getAllProcessInfo",
        &[],
        Box::new(move |result| {
            let Some(processes) = read_reply(host, &result) else {
                return;
            };
            for (member, line, changes_when_sent) in &members {
                apply(member, *line, changes_when_sent, &processes, &result);
            }
        }),
    );
}

/// The programs a reply lists; `None` when the read failed (logged once per host and cause).
fn read_reply(host: Host, result: &Result<Value, CallError>) -> Option<Vec<ProcessInfo>> {
    let log = cycle_log();
    let address = host.display();
    if let Err(error) = result {
        if failure_told_by_reachability(error, host.unreachable()) {
            ngx::ngx_log_debug!(
                log,
                "supervisord: reading program states from {} failed: {}",
                address,
                error
            );
            return None;
        }
    }
    let processes = match result
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(parse_all_process_info)
    {
        Ok(processes) => processes,
        Err(error) => {
            let mut last_error = host.runtime().last_sync_error.borrow_mut();
            if last_error.as_deref() != Some(error.as_str()) {
                ngx::ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "supervisord: {}: reading program states from {} failed: {}",
                    host.members_text(),
                    address,
                    error
                );
                *last_error = Some(error);
            }
            return None;
        }
    };
    if host.runtime().last_sync_error.borrow_mut().take().is_some() {
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "supervisord: {}: reading program states from {} works again",
            host.members_text(),
            address
        );
    }
    Some(processes)
}

/// Brings one upstream's statuses in line with the programs supervisord listed: each backend
/// takes the read as an event of its state machine (`core::machine`).
fn apply(
    upstream: &'static UpstreamRuntime,
    line: usize,
    changes_when_sent: &[u64],
    processes: &[ProcessInfo],
    result: &Result<Value, CallError>,
) {
    let conf = upstream.conf;
    let log = cycle_log();
    let now = now_ms();
    let mut changed = 0;
    let mut read = 0;
    for (index, backend) in conf.backends.iter().enumerate() {
        if backend.line != line {
            continue;
        }
        read += 1;
        let process = process_named(processes, &backend.program);
        let observed = &process.map(|process| process.state);
        let sync = Sync {
            observed: *observed,
            pid: process.map_or(0, |process| process.pid),
            changes_when_sent: changes_when_sent.get(index).copied().unwrap_or(u64::MAX),
            can_probe: !backend.sockaddrs.is_empty(),
            // A command whose worker vanished would hold its transitional status for ever.
            stale_after_ms: conf.timeout_ms() * 2,
        };
        let step = upstream.lock().step(index, &Event::Synced(sync), now);
        for action in &step.actions {
            match action {
                Action::ProbeStart => readiness::watch_hand_start(upstream, index),
                Action::Tell(tell) => {
                    tell_sync(upstream, index, tell, *observed, processes, result)
                }
                _ => {
                    upstream.carry_out_local(index, action);
                }
            }
        }
        if step.actions.iter().any(|action| {
            matches!(
                action,
                Action::Tell(Tell::Moved { .. } | Tell::FailedStart { .. })
            )
        }) {
            changed += 1;
        }
    }
    ngx::ngx_log_debug!(
        log,
        "supervisord: upstream \"{}\": program states read, {} of {} backends change",
        conf.name,
        changed,
        read
    );
}

/// The line of what a read of supervisord changed for backend `index`.
fn tell_sync(
    upstream: &UpstreamRuntime,
    index: usize,
    tell: &Tell,
    observed: Option<ProcessState>,
    processes: &[ProcessInfo],
    result: &Result<Value, CallError>,
) {
    let conf = upstream.conf;
    let program = &conf.backends[index].program;
    match *tell {
        Tell::ProgramMissing => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}): supervisord has no program \"{}\" ({}); check \"supervisord_name\" (a group member is \"group:name\")",
                conf.name,
                index,
                conf.backends[index].name,
                program,
                names_like(program, processes)
            );
        }
        Tell::FailedStart { backoff } => {
            let reason = result
                .as_ref()
                .ok()
                .and_then(|value| find_process_detail(value, program))
                .map_or_else(|| "nothing more".into(), |detail| detail.reason());
            readiness::log_failed_start(
                upstream,
                index,
                &readiness::exit_text(&reason),
                None,
                backoff,
            );
        }
        Tell::Moved { from, to } => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} -> {} (supervisord says {})",
                conf.name,
                index,
                conf.backends[index].name,
                program,
                from,
                to,
                observed.map(|state| state.name()).unwrap_or("no such program")
            );
        }
        _ => {}
    }
}
