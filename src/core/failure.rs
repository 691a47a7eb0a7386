//! What a failed request (connection refused, reset, timed out) does to its backend. As in the
//! 2010 module, a failing backend is taken out and stopped through supervisord; once every
//! backend is down, the next request starts one again and is held meanwhile.

use super::backend_status::BackendStatus;
use super::commands::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Leave the backend as it is (not UP any more, or nothing to stop).
    Ignore,
    /// Take it out (SHUTTING_DOWN) and stop its program.
    Stop,
}

pub fn failure_action(mode: Mode, current: BackendStatus) -> FailureAction {
    match (mode, current) {
        (Mode::Supervised, BackendStatus::Up) => FailureAction::Stop,
        _ => FailureAction::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    #[test]
    fn only_an_up_supervised_backend_is_stopped() {
        assert_eq!(failure_action(Mode::Supervised, Up), FailureAction::Stop);
        for other in [Down, StartingUp, ShuttingDown] {
            assert_eq!(
                failure_action(Mode::Supervised, other),
                FailureAction::Ignore
            );
        }
        // With `supervisord none` there is nothing to stop; the balancer's own
        // max_fails/fail_timeout handle failures.
        assert_eq!(failure_action(Mode::Immediate, Up), FailureAction::Ignore);
    }
}
