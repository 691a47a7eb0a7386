//! The hold gate's decisions: may a request go on to the balancer, must it wait for a backend,
//! or has the start it waited for failed; and which backend a waiting request starts. A backend
//! waiting out its start backoff (`core::start_backoff`) is not started on demand: another DOWN
//! backend is, and when every DOWN backend waits, requests are answered at once.

use super::backend_status::BackendStatus;
use super::backend_status::Command;
use super::commands::{decide, Decision, Mode};

/// What the gate knows of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendView {
    pub status: BackendStatus,
    /// Time left before it may be started on demand again; `None` when it may be now.
    pub backoff_left_ms: Option<u64>,
}

impl BackendView {
    pub fn new(status: BackendStatus, backoff_left_ms: Option<u64>) -> Self {
        Self {
            status,
            backoff_left_ms,
        }
    }

    fn startable(&self) -> bool {
        self.status == BackendStatus::Down && self.backoff_left_ms.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldVerdict {
    /// A backend takes requests: go on to the balancer.
    Proceed,
    /// A start failed since the request began waiting and nothing else is starting.
    StartFailed,
    /// Nothing is up or starting, nothing is shutting down, and every DOWN backend waits out
    /// its start backoff: answer at once (503, `Retry-After` the shortest wait) instead of
    /// holding the request for a start that will not come.
    BackingOff { retry_after_ms: u64 },
    /// Wait for a backend; when `start` nothing is starting yet, so one must be started.
    Wait { start: bool },
}

/// `failed_starts` is the upstream's failed-start count now, `failures_seen` what it was when the
/// request began waiting.
/// Takes the backends as an iterator so that the common case (a backend is up) costs no
/// allocation on the request path.
pub fn hold_verdict<I>(backends: I, failed_starts: u64, failures_seen: u64) -> HoldVerdict
where
    I: Iterator<Item = BackendView> + Clone,
{
    if backends
        .clone()
        .any(|backend| backend.status.takes_requests())
    {
        return HoldVerdict::Proceed;
    }
    let starting = backends
        .clone()
        .any(|backend| backend.status == BackendStatus::StartingUp);
    if !starting && failed_starts != failures_seen {
        return HoldVerdict::StartFailed;
    }
    if !starting {
        if let Some(retry_after_ms) = all_backing_off(backends) {
            return HoldVerdict::BackingOff { retry_after_ms };
        }
    }
    HoldVerdict::Wait { start: !starting }
}

/// The shortest backoff left when every backend is DOWN and waiting one out; `None` otherwise
/// (one is startable, or one is shutting down and worth waiting for).
fn all_backing_off<I: Iterator<Item = BackendView>>(backends: I) -> Option<u64> {
    let mut shortest: Option<u64> = None;
    for backend in backends {
        match (backend.status, backend.backoff_left_ms) {
            (BackendStatus::Down, Some(left)) => {
                shortest = Some(shortest.map_or(left, |s| s.min(left)));
            }
            _ => return None,
        }
    }
    shortest
}

/// A start that a waiting request sets off: move `index` to `status`, then ask supervisord.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartPlan {
    pub index: usize,
    pub status: BackendStatus,
    pub ask_supervisord: bool,
    /// DOWN backends before `index` that were passed over: they wait out their backoff.
    pub skipped_backing_off: usize,
}

/// The backend a waiting request starts: the first DOWN one not waiting out a start backoff,
/// unless one is up or starting already (another worker got there first). Decided under the
/// zone's lock.
pub fn backend_to_start(backends: &[BackendView], mode: Mode) -> Option<StartPlan> {
    if backends.iter().any(|backend| {
        matches!(
            backend.status,
            BackendStatus::Up | BackendStatus::StartingUp
        )
    }) {
        return None;
    }
    let index = backends.iter().position(BackendView::startable)?;
    let skipped_backing_off = backends[..index]
        .iter()
        .filter(|backend| backend.status == BackendStatus::Down)
        .count();
    match decide(Command::Start, backends[index].status, mode) {
        Decision::Apply {
            status,
            ask_supervisord,
        } => Some(StartPlan {
            index,
            status,
            ask_supervisord,
            skipped_backing_off,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    fn views(statuses: &[BackendStatus]) -> Vec<BackendView> {
        statuses
            .iter()
            .map(|status| BackendView::new(*status, None))
            .collect()
    }

    fn verdict(statuses: &[BackendStatus], failed: u64, seen: u64) -> HoldVerdict {
        hold_verdict(views(statuses).into_iter(), failed, seen)
    }

    #[test]
    fn any_backend_taking_requests_lets_the_request_through() {
        assert_eq!(verdict(&[Down, Up], 0, 0), HoldVerdict::Proceed);
        assert_eq!(verdict(&[Up], 5, 0), HoldVerdict::Proceed);
        let backing_off = [
            BackendView::new(Down, Some(500)),
            BackendView::new(Up, None),
        ];
        assert_eq!(
            hold_verdict(backing_off.into_iter(), 0, 0),
            HoldVerdict::Proceed
        );
    }

    #[test]
    fn nothing_up_and_nothing_starting_means_start_one_and_wait() {
        assert_eq!(
            verdict(&[Down, Down], 0, 0),
            HoldVerdict::Wait { start: true }
        );
        assert_eq!(
            verdict(&[ShuttingDown, Down], 3, 3),
            HoldVerdict::Wait { start: true }
        );
    }

    #[test]
    fn a_start_under_way_is_waited_for_without_another() {
        assert_eq!(
            verdict(&[StartingUp, Down], 0, 0),
            HoldVerdict::Wait { start: false }
        );
        // A failure elsewhere does not end the wait while something is still starting.
        assert_eq!(
            verdict(&[StartingUp, Down], 1, 0),
            HoldVerdict::Wait { start: false }
        );
    }

    #[test]
    fn a_failed_start_ends_the_wait_of_those_who_saw_it_coming() {
        assert_eq!(verdict(&[Down], 1, 0), HoldVerdict::StartFailed);
        // A request that arrived after the failure starts again instead.
        assert_eq!(verdict(&[Down], 1, 1), HoldVerdict::Wait { start: true });
        // Even when the backend now backs off: those who waited learn of the failure.
        let backing_off = [BackendView::new(Down, Some(900))];
        assert_eq!(
            hold_verdict(backing_off.into_iter(), 1, 0),
            HoldVerdict::StartFailed
        );
    }

    #[test]
    fn every_down_backend_backing_off_answers_at_once_with_the_shortest_wait() {
        let backends = [
            BackendView::new(Down, Some(4_000)),
            BackendView::new(Down, Some(1_500)),
        ];
        assert_eq!(
            hold_verdict(backends.into_iter(), 2, 2),
            HoldVerdict::BackingOff {
                retry_after_ms: 1_500
            }
        );
        // One startable backend: it is started instead.
        let backends = [
            BackendView::new(Down, Some(4_000)),
            BackendView::new(Down, None),
        ];
        assert_eq!(
            hold_verdict(backends.into_iter(), 2, 2),
            HoldVerdict::Wait { start: true }
        );
        // A backend shutting down (a hand restart) is worth waiting for.
        let backends = [
            BackendView::new(Down, Some(4_000)),
            BackendView::new(ShuttingDown, None),
        ];
        assert_eq!(
            hold_verdict(backends.into_iter(), 2, 2),
            HoldVerdict::Wait { start: true }
        );
        // Starting elsewhere: wait for it.
        let backends = [
            BackendView::new(Down, Some(4_000)),
            BackendView::new(StartingUp, None),
        ];
        assert_eq!(
            hold_verdict(backends.into_iter(), 2, 2),
            HoldVerdict::Wait { start: false }
        );
        assert_eq!(
            hold_verdict(std::iter::empty(), 0, 0),
            HoldVerdict::Wait { start: true }
        );
    }

    #[test]
    fn the_first_down_backend_is_started() {
        assert_eq!(
            backend_to_start(&views(&[ShuttingDown, Down, Down]), Mode::Supervised),
            Some(StartPlan {
                index: 1,
                status: StartingUp,
                ask_supervisord: true,
                skipped_backing_off: 0,
            })
        );
        assert_eq!(
            backend_to_start(&views(&[Down]), Mode::Immediate),
            Some(StartPlan {
                index: 0,
                status: Up,
                ask_supervisord: false,
                skipped_backing_off: 0,
            })
        );
    }

    #[test]
    fn a_backend_backing_off_is_passed_over_for_the_next_down_one() {
        let backends = [
            BackendView::new(Down, Some(2_000)),
            BackendView::new(ShuttingDown, None),
            BackendView::new(Down, None),
        ];
        assert_eq!(
            backend_to_start(&backends, Mode::Supervised),
            Some(StartPlan {
                index: 2,
                status: StartingUp,
                ask_supervisord: true,
                skipped_backing_off: 1,
            })
        );
        let all_waiting = [
            BackendView::new(Down, Some(2_000)),
            BackendView::new(Down, Some(1)),
        ];
        assert_eq!(backend_to_start(&all_waiting, Mode::Supervised), None);
    }

    #[test]
    fn nothing_is_started_twice() {
        assert_eq!(
            backend_to_start(&views(&[StartingUp, Down]), Mode::Supervised),
            None
        );
        assert_eq!(
            backend_to_start(&views(&[Down, Up]), Mode::Supervised),
            None
        );
        assert_eq!(
            backend_to_start(&views(&[ShuttingDown]), Mode::Supervised),
            None
        );
        assert_eq!(backend_to_start(&[], Mode::Supervised), None);
    }
}
