//! The commander: carries a start or stop out through supervisord for the worker that won the
//! transition (DOWN -> STARTING_UP, UP -> SHUTTING_DOWN) and settles the backend's status with
//! the outcome. Exactly one call per transition, whichever worker took it.

use nginx_sys::{ngx_current_msec, ngx_cycle, NGX_LOG_ERR, NGX_LOG_NOTICE};

use crate::conf::UpstreamConf;
use crate::core::backend_status::Command;
use crate::core::call_outcome::command_succeeded;
use crate::core::commands::settle;
use crate::core::process_state::program_name;
use crate::core::xmlrpc::Param;
use crate::shared_zone::ZoneLock;
use crate::supervisord_client;

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
    supervisord_client::call(
        upstream,
        method,
        &params,
        Box::new(move |result| {
            let outcome = command_succeeded(command, &result);
            let settled = settle(command, outcome.is_ok());
            let lock = ZoneLock::new(upstream);
            let before = lock.status(index);
            // A reconciliation may have settled an orphaned command meanwhile.
            let owned = before == command.transitional_status();
            if owned {
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
