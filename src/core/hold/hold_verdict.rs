//! The hold gate's decisions: may a request go on to the balancer, must it wait for a backend,
//! or has the start it waited for failed; and which backend a waiting request starts. A backend
//! waiting out its start backoff (`core::start::start_backoff`) is not started on demand: another DOWN
//! backend is, and when every DOWN backend waits, requests are answered at once.

use crate::backend_status::BackendStatus;
use crate::backend_status::Command;
use crate::commands::{decide, Decision, Mode};
use crate::policy::placement::{pick, Placeable};

/// What the gate knows of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendView {
    pub status: BackendStatus,
    /// Time left before it may be started on demand again; `None` when it may be now.
    pub backoff_left_ms: Option<u64>,
    /// supervisord has no program of its name (its last read said so, or a start's fault):
    /// it is not started until supervisord has one.
    pub program_missing: bool,
    /// Its host (`supervisord` line) and whether that supervisord is away (`placement`).
    pub host: usize,
    pub host_away: bool,
}

impl BackendView {
    pub fn new(status: BackendStatus, backoff_left_ms: Option<u64>) -> Self {
        Self {
            status,
            backoff_left_ms,
            program_missing: false,
            host: 0,
            host_away: false,
        }
    }

    pub fn on_host(self, host: usize, host_away: bool) -> Self {
        Self {
            host,
            host_away,
            ..self
        }
    }

    pub fn with_program_missing(self, program_missing: bool) -> Self {
        Self {
            program_missing,
            ..self
        }
    }

    fn startable(&self) -> bool {
        self.status == BackendStatus::Down
            && self.backoff_left_ms.is_none()
            && !self.program_missing
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
    /// Nothing is up, starting or shutting down, and supervisord has no program for any
    /// backend: answer 502 at once (the last read of supervisord logged the names it lacks).
    NoProgram,
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
        if let Some(verdict) = nothing_to_start(backends) {
            return verdict;
        }
    }
    HoldVerdict::Wait { start: !starting }
}

/// When every backend is DOWN and none may be started (each waits out a backoff or has no
/// program): `BackingOff` with the shortest wait left, or `NoProgram` when none waits; `None`
/// otherwise (one is startable, or one is shutting down and worth waiting for).
fn nothing_to_start<I: Iterator<Item = BackendView>>(backends: I) -> Option<HoldVerdict> {
    let mut shortest: Option<u64> = None;
    let mut any = false;
    for backend in backends {
        any = true;
        match (backend.status, backend.backoff_left_ms) {
            (BackendStatus::Down, _) if backend.program_missing => {}
            (BackendStatus::Down, Some(left)) => {
                shortest = Some(shortest.map_or(left, |s| s.min(left)));
            }
            _ => return None,
        }
    }
    match shortest {
        Some(retry_after_ms) => Some(HoldVerdict::BackingOff { retry_after_ms }),
        None => any.then_some(HoldVerdict::NoProgram),
    }
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
    let placeables: Vec<Placeable> = backends
        .iter()
        .map(|backend| Placeable {
            startable: backend.startable(),
            host: backend.host,
            running: false,
            host_away: backend.host_away,
        })
        .collect();
    let index = pick(&placeables)?;
    let skipped_backing_off = backends[..index]
        .iter()
        .filter(|backend| {
            backend.status == BackendStatus::Down && backend.backoff_left_ms.is_some()
        })
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use BackendStatus::*;

    fn any_view() -> impl Strategy<Value = BackendView> {
        (0u8..4, proptest::option::of(1u64..120_000), 0u8..4).prop_map(
            |(raw, backoff_left_ms, missing)| {
                BackendView::new(BackendStatus::from_raw(raw).unwrap(), backoff_left_ms)
                    .with_program_missing(missing == 0)
            },
        )
    }

    fn verdict(backends: &[BackendView], failed: u64, seen: u64) -> HoldVerdict {
        hold_verdict(backends.iter().copied(), failed, seen)
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// A request goes on exactly when a backend is UP; it waits without starting another
        /// exactly when none is UP and one is starting; a failed start is reported only when
        /// none is UP or starting; a request is answered at once for a backoff only when every
        /// backend is DOWN and backing off, with the shortest wait left; and the verdict does
        /// not depend on the order of the servers.
        #[test]
        fn the_verdict_follows_the_backends(
            backends in proptest::collection::vec(any_view(), 1..8),
            failed in 0u64..4,
            seen in 0u64..4,
            rotation in 0usize..8,
        ) {
            let any = |status| backends.iter().any(|backend| backend.status == status);
            let verdict_now = verdict(&backends, failed, seen);
            prop_assert_eq!(verdict_now == HoldVerdict::Proceed, any(Up));
            prop_assert_eq!(
                verdict_now == HoldVerdict::Wait { start: false },
                !any(Up) && any(StartingUp)
            );
            match verdict_now {
                HoldVerdict::StartFailed => {
                    prop_assert!(!any(Up) && !any(StartingUp) && failed != seen)
                }
                HoldVerdict::BackingOff { retry_after_ms } => {
                    prop_assert!(backends.iter().all(|b| b.status == Down
                        && (b.backoff_left_ms.is_some() || b.program_missing)));
                    let shortest = backends
                        .iter()
                        .filter(|b| !b.program_missing)
                        .filter_map(|b| b.backoff_left_ms)
                        .min();
                    prop_assert_eq!(Some(retry_after_ms), shortest);
                }
                HoldVerdict::NoProgram => {
                    prop_assert!(backends.iter().all(|b| b.status == Down && b.program_missing));
                }
                _ => {}
            }
            let mut reordered = backends.clone();
            reordered.rotate_left(rotation % backends.len());
            prop_assert_eq!(verdict(&reordered, failed, seen), verdict_now);
            reordered.reverse();
            prop_assert_eq!(verdict(&reordered, failed, seen), verdict_now);
        }

        /// A request told to wait and start one finds a backend to start (unless one is
        /// shutting down, worth waiting for instead): the first DOWN one not backing off, the
        /// DOWN ones before it all backing off. No start is planned while one is UP or
        /// starting, and never of a backend that backs off or is not DOWN.
        #[test]
        fn a_start_goes_to_the_first_startable_backend(
            backends in proptest::collection::vec(any_view(), 1..8),
            immediate: bool,
        ) {
            let mode = if immediate { Mode::Immediate } else { Mode::Supervised };
            let plan = backend_to_start(&backends, mode);
            let up_or_starting = backends.iter().any(|b| matches!(b.status, Up | StartingUp));
            if verdict(&backends, 0, 0) == (HoldVerdict::Wait { start: true })
                && !backends.iter().any(|b| b.status == ShuttingDown)
            {
                prop_assert!(plan.is_some());
            }
            if let Some(plan) = plan {
                prop_assert!(!up_or_starting);
                let chosen = backends[plan.index];
                prop_assert!(chosen.status == Down
                    && chosen.backoff_left_ms.is_none()
                    && !chosen.program_missing);
                let before = &backends[..plan.index];
                prop_assert!(before
                    .iter()
                    .all(|b| b.status != Down || b.backoff_left_ms.is_some() || b.program_missing));
                prop_assert_eq!(
                    plan.skipped_backing_off,
                    before
                        .iter()
                        .filter(|b| b.status == Down && b.backoff_left_ms.is_some())
                        .count()
                );
                let (status, ask) = if immediate { (Up, false) } else { (StartingUp, true) };
                prop_assert_eq!((plan.status, plan.ask_supervisord), (status, ask));
            } else if !up_or_starting {
                prop_assert!(!backends.iter().any(|b| b.status == Down
                    && b.backoff_left_ms.is_none()
                    && !b.program_missing));
            }
        }
    }

    #[test]
    fn a_backend_supervisord_has_no_program_for_is_never_started() {
        let missing = BackendView::new(Down, None).with_program_missing(true);
        let plain = BackendView::new(Down, None);
        let plan = backend_to_start(&[missing, plain], Mode::Supervised).unwrap();
        assert_eq!(plan.index, 1);
        assert_eq!(backend_to_start(&[missing], Mode::Supervised), None);
        assert_eq!(
            hold_verdict([missing, missing].into_iter(), 0, 0),
            HoldVerdict::NoProgram
        );
        // With one waiting out a backoff as well, the request may retry after it.
        assert_eq!(
            hold_verdict(
                [missing, BackendView::new(Down, Some(700))].into_iter(),
                0,
                0
            ),
            HoldVerdict::BackingOff {
                retry_after_ms: 700
            }
        );
        assert_eq!(
            hold_verdict([missing, plain].into_iter(), 0, 0),
            HoldVerdict::Wait { start: true }
        );
    }
}
