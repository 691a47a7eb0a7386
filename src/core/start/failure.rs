//! What failed requests (connection refused, reset, timed out, a `proxy_next_upstream` status)
//! do to their backend. They count as nginx counts them: `max_fails` failures within
//! `fail_timeout` (per server line; `max_fails=0` never acts on traffic). A backend that reaches
//! its limit is checked before anything is done to it: it stays UP while it accepts
//! connections (a slow or failing request never takes the others down with it), goes DOWN
//! without a stop call when its program is not running, and is restarted (stopped, then
//! started by the next request) when its program runs but refuses connections.

use crate::backend_status::BackendStatus;
use crate::commands::Mode;
use crate::protocol::process_state::ProcessState;

/// nginx's `max_fails` and `fail_timeout` of one server line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureLimit {
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
}

impl Default for FailureLimit {
    /// nginx's defaults: `max_fails=1 fail_timeout=10s`.
    fn default() -> Self {
        Self {
            max_fails: 1,
            fail_timeout_ms: 10_000,
        }
    }
}

/// The recent failures of one backend, as one worker saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCount {
    pub failures: u32,
    /// When the first failure of the current window happened.
    pub window_start_ms: u64,
}

impl FailureCount {
    /// Counts one failure; true when that reaches the limit.
    pub fn record_failure(&mut self, now_ms: u64, limit: FailureLimit) -> bool {
        if limit.max_fails == 0 {
            return false;
        }
        let window_over = now_ms.saturating_sub(self.window_start_ms) > limit.fail_timeout_ms;
        if self.failures == 0 || window_over {
            *self = Self {
                failures: 1,
                window_start_ms: now_ms,
            };
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        self.failures >= limit.max_fails
    }

    /// A request succeeded: the backend works.
    pub fn record_success(&mut self) {
        *self = Self::default();
    }
}

/// What the check found of the backend's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramSeen {
    /// supervisord's state of the program; `None` when supervisord has no such program.
    Known(Option<ProcessState>),
    /// supervisord could not be asked.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Nothing to do (not UP any more, or `supervisord none`).
    Ignore,
    /// It accepts connections: the failures were the requests', not the backend's.
    LeaveUp,
    /// Its program is not running: DOWN, without a stop call.
    MarkDown,
    /// Its program runs but refuses connections: stop it (the next request starts it again).
    Restart,
    /// Its program is being stopped or started outside nginx (`supervisorctl restart`,
    /// supervisord restarting it after a crash): follow it as reconciliation would, SHUTTING_DOWN
    /// or STARTING_UP, so that requests wait for it rather than start it meanwhile (a start
    /// sent while supervisord stops the program fails as if the program exited).
    Follow(BackendStatus),
}

/// Whether to look at the program at all: only an UP backend of a real supervisord.
pub fn worth_checking(mode: Mode, current: BackendStatus) -> bool {
    mode == Mode::Supervised && current == BackendStatus::Up
}

/// The decision once a backend reached its failure limit and was checked: `accepts` tells
/// whether any of its addresses accepted a connection, `program` what supervisord says (only
/// asked when nothing accepted), `in_start_phase` whether its program was started within the
/// start phase (`supervisord_timeout`): then it may just not listen yet (another nginx in
/// front of the same supervisord, or `supervisorctl restart`, started it), and it is followed
/// and probed like a start, never restarted in the middle of its boot.
pub fn failure_action(
    mode: Mode,
    current: BackendStatus,
    accepts: bool,
    program: ProgramSeen,
    in_start_phase: bool,
) -> FailureAction {
    if !worth_checking(mode, current) {
        return FailureAction::Ignore;
    }
    if accepts {
        return FailureAction::LeaveUp;
    }
    match program {
        ProgramSeen::Known(Some(ProcessState::Running)) if in_start_phase => {
            FailureAction::Follow(BackendStatus::StartingUp)
        }
        ProgramSeen::Known(Some(ProcessState::Running)) => FailureAction::Restart,
        ProgramSeen::Known(Some(ProcessState::Stopping)) => {
            FailureAction::Follow(BackendStatus::ShuttingDown)
        }
        ProgramSeen::Known(Some(ProcessState::Starting)) => {
            FailureAction::Follow(BackendStatus::StartingUp)
        }
        // Gone, exited, in backoff, no such program, or supervisord unreachable while nothing
        // answers on the backend's addresses: it cannot serve now. DOWN: the next request
        // starts it and is held until it accepts connections.
        ProgramSeen::Known(_) | ProgramSeen::Unknown => FailureAction::MarkDown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    const LIMIT_3_IN_10S: FailureLimit = FailureLimit {
        max_fails: 3,
        fail_timeout_ms: 10_000,
    };

    #[test]
    fn failures_count_within_fail_timeout_as_nginx_counts_them() {
        let mut count = FailureCount::default();
        assert!(!count.record_failure(1_000, LIMIT_3_IN_10S));
        assert!(!count.record_failure(2_000, LIMIT_3_IN_10S));
        assert!(count.record_failure(11_000, LIMIT_3_IN_10S));
        // A failure after the window starts a new one.
        let mut count = FailureCount::default();
        count.record_failure(1_000, LIMIT_3_IN_10S);
        count.record_failure(2_000, LIMIT_3_IN_10S);
        assert!(!count.record_failure(11_001, LIMIT_3_IN_10S));
        assert_eq!(count.failures, 1);
    }

    #[test]
    fn the_default_limit_is_reached_by_one_failure() {
        let mut count = FailureCount::default();
        assert!(count.record_failure(5, FailureLimit::default()));
    }

    #[test]
    fn max_fails_zero_never_acts_on_traffic() {
        let never = FailureLimit {
            max_fails: 0,
            fail_timeout_ms: 10_000,
        };
        let mut count = FailureCount::default();
        for now in 0..100 {
            assert!(!count.record_failure(now, never));
        }
    }

    #[test]
    fn a_success_clears_the_count() {
        let mut count = FailureCount::default();
        count.record_failure(1_000, LIMIT_3_IN_10S);
        count.record_failure(1_001, LIMIT_3_IN_10S);
        count.record_success();
        assert!(!count.record_failure(1_002, LIMIT_3_IN_10S));
    }

    #[test]
    fn a_backend_that_accepts_connections_stays_up() {
        for program in [
            ProgramSeen::Known(Some(ProcessState::Running)),
            ProgramSeen::Known(None),
            ProgramSeen::Unknown,
        ] {
            assert_eq!(
                failure_action(Mode::Supervised, Up, true, program, false),
                FailureAction::LeaveUp
            );
        }
    }

    #[test]
    fn a_program_that_is_not_running_goes_down_without_a_stop() {
        for state in [
            Some(ProcessState::Exited),
            Some(ProcessState::Fatal),
            Some(ProcessState::Stopped),
            Some(ProcessState::Backoff),
            None,
        ] {
            assert_eq!(
                failure_action(
                    Mode::Supervised,
                    Up,
                    false,
                    ProgramSeen::Known(state),
                    false
                ),
                FailureAction::MarkDown
            );
        }
        assert_eq!(
            failure_action(Mode::Supervised, Up, false, ProgramSeen::Unknown, false),
            FailureAction::MarkDown
        );
    }

    #[test]
    fn a_program_stopped_or_started_outside_nginx_is_followed() {
        let seen = |state| ProgramSeen::Known(Some(state));
        assert_eq!(
            failure_action(
                Mode::Supervised,
                Up,
                false,
                seen(ProcessState::Stopping),
                false
            ),
            FailureAction::Follow(ShuttingDown)
        );
        assert_eq!(
            failure_action(
                Mode::Supervised,
                Up,
                false,
                seen(ProcessState::Starting),
                false
            ),
            FailureAction::Follow(StartingUp)
        );
    }

    #[test]
    fn a_running_program_that_refuses_connections_is_restarted() {
        assert_eq!(
            failure_action(
                Mode::Supervised,
                Up,
                false,
                ProgramSeen::Known(Some(ProcessState::Running)),
                false
            ),
            FailureAction::Restart
        );
    }

    #[test]
    fn a_program_started_within_the_start_phase_is_followed_not_restarted() {
        // Another nginx, or supervisorctl restart, started it a moment ago: it may not listen
        // yet.
        assert_eq!(
            failure_action(
                Mode::Supervised,
                Up,
                false,
                ProgramSeen::Known(Some(ProcessState::Running)),
                true
            ),
            FailureAction::Follow(StartingUp)
        );
    }

    #[test]
    fn only_an_up_supervised_backend_is_acted_on() {
        let running = ProgramSeen::Known(Some(ProcessState::Running));
        for other in [Down, StartingUp, ShuttingDown] {
            assert_eq!(
                failure_action(Mode::Supervised, other, false, running, false),
                FailureAction::Ignore
            );
        }
        assert_eq!(
            failure_action(Mode::Immediate, Up, false, running, false),
            FailureAction::Ignore
        );
        assert!(!worth_checking(Mode::Immediate, Up));
        assert!(worth_checking(Mode::Supervised, Up));
    }
}
