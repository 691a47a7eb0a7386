//! The hold gate's decisions: may a request go on to the balancer, must it wait for a backend,
//! or has the start it waited for failed; and which backend a waiting request starts.

use super::backend_status::{BackendStatus, Command};
use super::commands::{decide, select_backend, Decision, Mode};
use super::control_uri::BackendSelector;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldVerdict {
    /// A backend takes requests: go on to the balancer.
    Proceed,
    /// A start failed since the request began waiting and nothing else is starting.
    StartFailed,
    /// Wait for a backend; when `start` nothing is starting yet, so one must be started.
    Wait { start: bool },
}

/// `failed_starts` is the upstream's failed-start count now, `failures_seen` what it was when the
/// request began waiting.
/// Takes the statuses as an iterator so that the common case (a backend is up) costs no
/// allocation on the request path.
pub fn hold_verdict<I>(statuses: I, failed_starts: u64, failures_seen: u64) -> HoldVerdict
where
    I: Iterator<Item = BackendStatus> + Clone,
{
    if statuses.clone().any(BackendStatus::takes_requests) {
        return HoldVerdict::Proceed;
    }
    let starting = statuses
        .into_iter()
        .any(|status| status == BackendStatus::StartingUp);
    if !starting && failed_starts != failures_seen {
        return HoldVerdict::StartFailed;
    }
    HoldVerdict::Wait { start: !starting }
}

/// A start that a waiting request sets off: move `index` to `status`, then ask supervisord.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartPlan {
    pub index: usize,
    pub status: BackendStatus,
    pub ask_supervisord: bool,
}

/// The backend a waiting request starts: the first DOWN one, unless one is up or starting
/// already (another worker got there first). Decided under the zone's lock.
pub fn backend_to_start(statuses: &[BackendStatus], mode: Mode) -> Option<StartPlan> {
    if statuses
        .iter()
        .any(|status| matches!(status, BackendStatus::Up | BackendStatus::StartingUp))
    {
        return None;
    }
    let index = select_backend(Command::Start, BackendSelector::Any, statuses).ok()?;
    match decide(Command::Start, statuses[index], mode) {
        Decision::Apply {
            status,
            ask_supervisord,
        } => Some(StartPlan {
            index,
            status,
            ask_supervisord,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    #[test]
    fn any_backend_taking_requests_lets_the_request_through() {
        assert_eq!(
            hold_verdict([Down, Up].into_iter(), 0, 0),
            HoldVerdict::Proceed
        );
        assert_eq!(hold_verdict([Up].into_iter(), 5, 0), HoldVerdict::Proceed);
    }

    #[test]
    fn nothing_up_and_nothing_starting_means_start_one_and_wait() {
        assert_eq!(
            hold_verdict([Down, Down].into_iter(), 0, 0),
            HoldVerdict::Wait { start: true }
        );
        assert_eq!(
            hold_verdict([ShuttingDown, Down].into_iter(), 3, 3),
            HoldVerdict::Wait { start: true }
        );
    }

    #[test]
    fn a_start_under_way_is_waited_for_without_another() {
        assert_eq!(
            hold_verdict([StartingUp, Down].into_iter(), 0, 0),
            HoldVerdict::Wait { start: false }
        );
        // A failure elsewhere does not end the wait while something is still starting.
        assert_eq!(
            hold_verdict([StartingUp, Down].into_iter(), 1, 0),
            HoldVerdict::Wait { start: false }
        );
    }

    #[test]
    fn a_failed_start_ends_the_wait_of_those_who_saw_it_coming() {
        assert_eq!(
            hold_verdict([Down].into_iter(), 1, 0),
            HoldVerdict::StartFailed
        );
        // A request that arrived after the failure starts again instead.
        assert_eq!(
            hold_verdict([Down].into_iter(), 1, 1),
            HoldVerdict::Wait { start: true }
        );
    }

    #[test]
    fn the_first_down_backend_is_started() {
        assert_eq!(
            backend_to_start(&[ShuttingDown, Down, Down], Mode::Supervised),
            Some(StartPlan {
                index: 1,
                status: StartingUp,
                ask_supervisord: true
            })
        );
        assert_eq!(
            backend_to_start(&[Down], Mode::Immediate),
            Some(StartPlan {
                index: 0,
                status: Up,
                ask_supervisord: false
            })
        );
    }

    #[test]
    fn nothing_is_started_twice() {
        assert_eq!(
            backend_to_start(&[StartingUp, Down], Mode::Supervised),
            None
        );
        assert_eq!(backend_to_start(&[Down, Up], Mode::Supervised), None);
        assert_eq!(backend_to_start(&[ShuttingDown], Mode::Supervised), None);
        assert_eq!(backend_to_start(&[], Mode::Supervised), None);
    }
}
