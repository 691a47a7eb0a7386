//! The commander: carries a start or stop out through supervisord for the worker that won the
//! transition (DOWN -> STARTING_UP, UP -> SHUTTING_DOWN) and settles the backend's status with
//! the outcome. Exactly one call per transition, whichever worker took it.
//!
//! A start is settled UP by the readiness probe (the backend accepts connections), not by
//! supervisord's answer: supervisord calls a program RUNNING before it listens. Should the
//! probe not succeed within `supervisord_timeout` of a confirmed start, supervisord is trusted.

use std::cell::Cell;
use std::rc::Rc;

use nginx_sys::{ngx_current_msec, ngx_cycle, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN};

use crate::conf::UpstreamConf;
use crate::core::backend_status::{BackendStatus, Command};
use crate::core::call_outcome::command_succeeded;
use crate::core::commands::settle;
use crate::core::process_state::program_name;
use crate::core::xmlrpc::Param;
use crate::readiness_probe;
use crate::shared_zone::ZoneLock;
use crate::supervisord_client;

/// What the commander and the readiness probe of one start tell each other.
#[derive(Default)]
pub struct StartAttempt {
    /// supervisord answered that the program started.
    pub confirmed: Cell<bool>,
    /// The probe saw no connection accepted within its time.
    pub probe_gave_up: Cell<bool>,
}

pub fn now_ms() -> u64 {
    // SAFETY: nginx updates this monotonic clock in the worker's own thread.
    unsafe { ngx_current_msec as u64 }
}

/// Sends `command` for backend `index`, whose status the caller has just moved into the
/// command's transitional status.
pub fn execute(upstream: &'static UpstreamConf, index: usize, command: Command) {
    let program = program_name(upstream.program_prefix(), index);
    let method = match command {
        Command::Start => "supervisor.startProcess",
        Command::Stop => "supervisor.stopProcess",
    };
    let params = [Param::Str(&program), Param::Bool(true)];
    let program_for_log = program.clone();
    let attempt = Rc::new(StartAttempt::default());
    if command == Command::Start {
        readiness_probe::start(upstream, index, attempt.clone());
    }
    supervisord_client::call(
        upstream,
        method,
        &params,
        Box::new(move |result| {
            let outcome = command_succeeded(command, &result);
            let settled = settle(command, outcome.is_ok());
            if command == Command::Start && outcome.is_ok() {
                attempt.confirmed.set(true);
                if !attempt.probe_gave_up.get() {
                    // The probe settles it.
                    return;
                }
            }
            let lock = ZoneLock::new(upstream);
            let before = lock.status(index);
            // A reconciliation may have settled an orphaned command meanwhile.
            let owned = before == command.transitional_status();
            if owned {
                if command == Command::Start && outcome.is_err() {
                    lock.record_failed_start();
                }
                lock.set_status(index, settled);
            }
            drop(lock);
            // SAFETY: the cycle's log is valid in a worker.
            let log = unsafe { (*ngx_cycle).log };
            let backend = &upstream.backends[index];
            match outcome {
                Ok(()) if owned => {
                    ngx::ngx_log_error!(
                        NGX_LOG_NOTICE,
                        log,
                        "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} -> {}",
                        upstream.name,
                        index,
                        backend.name,
                        program_for_log,
                        before,
                        settled
                    );
                }
                Ok(()) => {}
                Err(error) => {
                    ngx::ngx_log_error!(
                        NGX_LOG_ERR,
                        log,
                        "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} failed: {}; status back to {}",
                        upstream.name,
                        index,
                        backend.name,
                        program_for_log,
                        command,
                        error,
                        if owned { settled } else { before }
                    );
                }
            }
        }),
    );
}

/// A request found backend `index` failing (connection refused, reset, timeout): as the 2010
/// module did, take it out (SHUTTING_DOWN) and stop it through supervisord. Once every backend
/// is down, the next request starts the first one again and is held meanwhile.
pub fn backend_failed(upstream: &'static UpstreamConf, index: usize) {
    let lock = ZoneLock::new(upstream);
    let before = lock.status(index);
    if before != BackendStatus::Up {
        return;
    }
    lock.begin_command(index, Command::Stop.transitional_status(), now_ms());
    drop(lock);
    // SAFETY: the cycle's log is valid in a worker.
    let log = unsafe { (*ngx_cycle).log };
    ngx::ngx_log_error!(
        NGX_LOG_WARN,
        log,
        "supervisord: upstream \"{}\" backend {} ({}) failed; stopping it",
        upstream.name,
        index,
        upstream.backends[index].name
    );
    execute(upstream, index, Command::Stop);
}
