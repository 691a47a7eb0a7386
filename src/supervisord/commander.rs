//! The commander: carries a start or stop out through supervisord for the worker that won the
//! transition (DOWN -> STARTING_UP, UP -> SHUTTING_DOWN) and settles the backend's status with
//! the outcome. Exactly one call per transition, whichever worker took it.
//!
//! A start is settled UP by the readiness probe (the backend accepts connections), not by
//! supervisord's answer: supervisord calls a program RUNNING before it listens. Should the
//! probe not succeed within `supervisord_timeout` of a confirmed start, supervisord is trusted
//! (see `core::start_handshake`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use nginx_sys::{NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN};

use super::client;
use super::readiness::{self, SharedHandshake};
use crate::core::backend_status::Command;
use crate::core::call_outcome::command_succeeded;
use crate::core::failure::{failure_action, FailureAction};
use crate::core::process_state::program_name;
use crate::core::reachability::{failure_told_by_reachability, supervisord_away};
use crate::core::start_handshake::{park_until_reachable, settle_reply, AfterReply};
use crate::core::xmlrpc::Param;
use crate::runtime::UpstreamRuntime;
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// Sends `command` for backend `index`, whose status the caller has just moved into the
/// command's transitional status.
pub fn execute(upstream: &'static UpstreamRuntime, index: usize, command: Command) {
    // A failure at once is settled and logged like any other; this caller answers nobody.
    send(upstream, index, command, false, |_| {});
}

/// As `execute`, for a caller that answers someone: `Err` with the reason when the call failed
/// at once (e.g. supervisord's socket cannot be reached), in which case the backend's status
/// is already settled back.
pub fn try_execute(
    upstream: &'static UpstreamRuntime,
    index: usize,
    command: Command,
) -> Result<(), String> {
    let calling = Rc::new(Cell::new(true));
    let failed_at_once: Rc<RefCell<Option<String>>> = Rc::default();
    send(upstream, index, command, true, {
        let (calling, failed_at_once) = (calling.clone(), failed_at_once.clone());
        move |error| {
            if calling.get() {
                *failed_at_once.borrow_mut() = Some(error);
            }
        }
    });
    calling.set(false);
    let failed = failed_at_once.borrow_mut().take();
    match failed {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// `caller_waits`: someone (a control request) is answered with the outcome at once.
fn send(
    upstream: &'static UpstreamRuntime,
    index: usize,
    command: Command,
    caller_waits: bool,
    on_failure: impl FnOnce(String) + 'static,
) {
    let conf = upstream.conf;
    let program = program_name(conf.program_prefix(), index);
    let method = match command {
        Command::Start => "supervisor.startProcess",
        Command::Stop => "supervisor.stopProcess",
    };
    let params = [Param::Str(&program), Param::Bool(true)];
    let program_for_log = program.clone();
    let handshake = SharedHandshake::default();
    if command == Command::Start {
        readiness::start(upstream, index, handshake.clone());
    }
    client::call(
        upstream,
        method,
        &params,
        Box::new(move |result| {
            let outcome = command_succeeded(command, &result);
            if let Err(error) = &outcome {
                if park_unreachable(upstream, index, command, caller_waits, error) {
                    return;
                }
            }
            if command == Command::Start {
                let mut state = handshake.get();
                let after = state.on_reply(outcome.is_ok());
                handshake.set(state);
                if after == AfterReply::LeaveToProbe {
                    ngx::ngx_log_debug!(
                        cycle_log(),
                        "supervisord: upstream \"{}\" backend {}: start confirmed, readiness probe settles it",
                        conf.name,
                        index
                    );
                    return;
                }
            }
            let lock = upstream.lock();
            let before = lock.status(index);
            let settlement = settle_reply(command, before, outcome.is_ok());
            if settlement.owned {
                if settlement.failed_start {
                    lock.record_failed_start();
                }
                lock.set_status(index, settlement.status);
            }
            drop(lock);
            let backend = &conf.backends[index];
            match outcome {
                Ok(()) if settlement.owned => {
                    ngx::ngx_log_error!(
                        NGX_LOG_NOTICE,
                        cycle_log(),
                        "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} -> {}",
                        conf.name,
                        index,
                        backend.name,
                        program_for_log,
                        before,
                        settlement.status
                    );
                }
                Ok(()) => {
                    ngx::ngx_log_debug!(
                        cycle_log(),
                        "supervisord: upstream \"{}\" backend {}: {} done, but the backend was settled {} meanwhile",
                        conf.name,
                        index,
                        command,
                        before
                    );
                }
                Err(error)
                    if failure_told_by_reachability(
                        &error,
                        upstream.shared().supervisord_unreachable(),
                    ) =>
                {
                    ngx::ngx_log_debug!(
                        cycle_log(),
                        "supervisord: upstream \"{}\" backend {}: {} failed: {}; status back to {}",
                        conf.name,
                        index,
                        command,
                        error,
                        if settlement.owned {
                            settlement.status
                        } else {
                            before
                        }
                    );
                    on_failure(error.to_string());
                }
                Err(error) => {
                    on_failure(error.to_string());
                    ngx::ngx_log_error!(
                        NGX_LOG_ERR,
                        cycle_log(),
                        "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} failed: {}; status back to {}",
                        conf.name,
                        index,
                        backend.name,
                        program_for_log,
                        command,
                        error,
                        if settlement.owned { settlement.status } else { before }
                    );
                }
            }
        }),
    );
}

/// A command whose call could not reach supervisord waits for it in its transitional status
/// (see `core::start_handshake::park_until_reachable`); the watchdog sends it again once
/// supervisord answers. Whether it was parked.
fn park_unreachable(
    upstream: &'static UpstreamRuntime,
    index: usize,
    command: Command,
    caller_waits: bool,
    error: &crate::core::call_outcome::CallError,
) -> bool {
    if !supervisord_away(command, error, upstream.shared().supervisord_unreachable()) {
        return false;
    }
    let lock = upstream.lock();
    let status = lock.status(index);
    if !park_until_reachable(command, status, caller_waits) {
        return false;
    }
    lock.park_command(index);
    drop(lock);
    let conf = upstream.conf;
    if failure_told_by_reachability(error, upstream.shared().supervisord_unreachable()) {
        ngx::ngx_log_debug!(
            cycle_log(),
            "supervisord: upstream \"{}\" backend {}: {} failed: {}; stays {} until supervisord answers again",
            conf.name,
            index,
            command,
            error,
            status
        );
    } else {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            cycle_log(),
            "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} failed: {}; stays {}, sent again once supervisord answers",
            conf.name,
            index,
            conf.backends[index].name,
            program_name(conf.program_prefix(), index),
            command,
            error,
            status
        );
    }
    true
}

/// A request to `address` (a sockaddr of the peer) of backend `index` failed (connection
/// refused, reset, timeout). The backend is stopped only once all its addresses fail.
pub fn backend_failed(upstream: &'static UpstreamRuntime, index: usize, address: &[u8]) {
    let conf = upstream.conf;
    let now = now_ms();
    let mut failures = upstream.address_failures.borrow_mut();
    let backend_failures = &mut failures[index];
    if let Some(position) = conf.backends[index]
        .sockaddrs
        .iter()
        .position(|known| known.as_slice() == address)
    {
        backend_failures[position] = Some(now);
    } else if let [only] = backend_failures.as_mut_slice() {
        // nginx handed over an address of its own; with one address there is no doubt.
        *only = Some(now);
    }
    let lock = upstream.lock();
    let before = lock.status(index);
    let action = failure_action(conf.mode(), before, backend_failures, now);
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\" backend {} failed a request while {}: {:?}",
        conf.name,
        index,
        before,
        action
    );
    if action != FailureAction::Stop {
        return;
    }
    lock.begin_command(index, Command::Stop.transitional_status(), now);
    drop(lock);
    // Once started again, the backend starts with a clean slate.
    backend_failures.fill(None);
    drop(failures);
    ngx::ngx_log_error!(
        NGX_LOG_WARN,
        cycle_log(),
        "supervisord: upstream \"{}\" backend {} ({}) failed; stopping it",
        conf.name,
        index,
        conf.backends[index].name
    );
    execute(upstream, index, Command::Stop);
}
