//! Watching a start through supervisord's eyes. The readiness probe sees when a program
//! listens; it cannot see a program that exits. While a backend is STARTING_UP, the probing
//! worker therefore also reads the program's state (`getProcessInfo`) every
//! `WATCH_INTERVAL_MS`: a program that exits at start-up fails the start at once, whatever
//! `startsecs` is (with `startsecs=0` supervisord confirms a start before the program can
//! exit).

use crate::backend_status::BackendStatus;
use crate::protocol::process_state::ProcessState;
use crate::protocol::xmlrpc::Fault;

/// The first read of the program's state, after the start was sent.
pub const WATCH_FIRST_MS: u64 = 200;
/// Then one read per this, while the backend is STARTING_UP.
pub const WATCH_INTERVAL_MS: u64 = 250;

/// supervisord's faults for a program that died within `startsecs`.
const FAULT_ABNORMAL_TERMINATION: i64 = 40;
const FAULT_SPAWN_ERROR: i64 = 50;
/// supervisord's fault for a name it has no program (or group) of.
const FAULT_BAD_NAME: i64 = 10;

/// The start's fault says the program exits at start-up (rather than that supervisord could
/// not be asked, or the name is wrong).
pub fn fault_means_exit(fault: &Fault) -> bool {
    matches!(fault.code, FAULT_ABNORMAL_TERMINATION | FAULT_SPAWN_ERROR)
}

/// supervisord has no program of the name asked for (a `supervisord_name` typo, a program not
/// added with `supervisorctl update`): no start can succeed until it has.
pub fn fault_means_no_program(fault: &Fault) -> bool {
    fault.code == FAULT_BAD_NAME
}

/// The program left the start for good: exited, or supervisord retries it (BACKOFF) or gave
/// up (FATAL).
pub fn exited_at_start_up(state: ProcessState) -> bool {
    matches!(
        state,
        ProcessState::Exited | ProcessState::Backoff | ProcessState::Fatal
    )
}

/// A `startProcess` on its way, and who asked for it: only an on-demand start that fails
/// counts for the backend's start backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingStart {
    ByHand,
    OnDemand,
}

/// Reconciliation moves a backend whose start is still pending to `to`, supervisord saying
/// `observed`: whether that is the start failing (the program listened, so the probe made it
/// UP, then died within `startsecs`). Reconciliation then reports it as the failed start,
/// since the start's own reply, arriving later, finds the backend already DOWN.
pub fn sync_fails_start(to: BackendStatus, observed: Option<ProcessState>) -> bool {
    to == BackendStatus::Down && observed.is_some_and(exited_at_start_up)
}

/// A start supervisord refused as if the program exited (ABNORMAL_TERMINATION), read against
/// the program's state just after: when supervisord was stopping it (a hand stop or restart
/// under way: it refuses to spawn a program it has not finished stopping), the start failed
/// because of that, not because the program exits at start-up. The status to follow then
/// (no failure counted, no backoff): still stopping, stopped (the next request starts it), or
/// started again by whoever restarts it. `None`: the program did exit (EXITED, BACKOFF, FATAL).
pub fn start_refused_by_a_stop(state: ProcessState) -> Option<BackendStatus> {
    match state {
        ProcessState::Stopping => Some(BackendStatus::ShuttingDown),
        ProcessState::Stopped => Some(BackendStatus::Down),
        ProcessState::Starting | ProcessState::Running => Some(BackendStatus::StartingUp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProcessState::*;

    #[test]
    fn only_exit_faults_mean_the_program_exits() {
        let fault = |code| Fault {
            code,
            string: String::new(),
        };
        assert!(fault_means_exit(&fault(40)));
        assert!(fault_means_exit(&fault(50)));
        for other in [10, 60, 70, 2] {
            assert!(!fault_means_exit(&fault(other)), "{other}");
        }
        assert!(fault_means_no_program(&fault(10)));
        assert!(!fault_means_no_program(&fault(50)));
    }

    #[test]
    fn exited_backoff_and_fatal_end_a_start() {
        for state in [Exited, Backoff, Fatal] {
            assert!(exited_at_start_up(state));
        }
        for state in [Starting, Running, Stopped, Stopping, Unknown] {
            assert!(!exited_at_start_up(state));
        }
    }

    #[test]
    fn a_start_refused_during_a_hand_restart_is_no_failure() {
        use BackendStatus::*;
        assert_eq!(
            start_refused_by_a_stop(ProcessState::Stopping),
            Some(ShuttingDown)
        );
        assert_eq!(start_refused_by_a_stop(ProcessState::Stopped), Some(Down));
        assert_eq!(
            start_refused_by_a_stop(ProcessState::Starting),
            Some(StartingUp)
        );
        assert_eq!(
            start_refused_by_a_stop(ProcessState::Running),
            Some(StartingUp)
        );
        for state in [
            ProcessState::Exited,
            ProcessState::Backoff,
            ProcessState::Fatal,
            ProcessState::Unknown,
        ] {
            assert_eq!(start_refused_by_a_stop(state), None);
        }
    }

    #[test]
    fn a_pending_start_fails_when_sync_sees_its_program_exited() {
        for state in [
            ProcessState::Exited,
            ProcessState::Backoff,
            ProcessState::Fatal,
        ] {
            assert!(sync_fails_start(BackendStatus::Down, Some(state)));
        }
        // Stopped by hand, or gone from supervisord: not a start that failed.
        assert!(!sync_fails_start(
            BackendStatus::Down,
            Some(ProcessState::Stopped)
        ));
        assert!(!sync_fails_start(BackendStatus::Down, None));
        assert!(!sync_fails_start(
            BackendStatus::Up,
            Some(ProcessState::Running)
        ));
    }
}
