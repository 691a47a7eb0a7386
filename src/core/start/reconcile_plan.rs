//! What a `getAllProcessInfo` reply changes. The reply describes supervisord when the call was
//! sent; a backend whose status moved since then (a start settled, a hand command) has newer
//! news than the reply, so the reply leaves it alone until the next round.
//!
//! supervisord's RUNNING is not "up": a program is RUNNING once it has lived `startsecs`, which
//! says nothing of whether it listens yet (an app that loads for 8 s is RUNNING after 1). A
//! program seen STARTING or RUNNING on a backend that is not UP therefore becomes STARTING_UP,
//! and the worker that read the reply probes it: only an accepted connection makes it UP, as
//! for a start nginx sent itself. This holds for every way a backend can find its program
//! running: a fresh shared state (nginx started, a reload that changed the server list), a
//! start made outside nginx, supervisord's own autorestart.

use crate::backend_status::BackendStatus;
use crate::protocol::process_state::ProcessState;
use crate::start::start_watch::sync_fails_start;

/// One backend as the reply finds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendAtReply {
    pub status: BackendStatus,
    /// Its status changed between sending the call and reading the reply.
    pub changed_since_sent: bool,
    /// Its command in flight is older than a worker could take to settle it.
    pub command_is_stale: bool,
    /// What supervisord says of its program; `None` when it has no such program.
    pub observed: Option<ProcessState>,
    /// Its program runs another process than at the last read (a hand restart).
    pub restarted: bool,
    /// It has an address the readiness probe can try (false only for a server that had no
    /// address at configuration time): without one, supervisord's RUNNING is all there is.
    pub can_probe: bool,
    /// It waits out the backoff of a failed start: a program that runs without accepting
    /// connections is not probed again before that wait is over.
    pub backing_off: bool,
    /// A start nginx sent is still pending (its outcome not settled yet).
    pub pending_start: bool,
}

/// A status to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub index: usize,
    pub from: BackendStatus,
    pub to: BackendStatus,
}

/// How a backend holds its new status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// STARTING_UP, owned by the worker that read the reply as its own start: it probes the
    /// program, and the next reads leave the backend alone until the probe settles it.
    OwnProbe,
    /// SHUTTING_DOWN that supervisord reported, not a command of nginx: no worker owns it,
    /// the next reads keep following it.
    Observed,
    /// A settled status (UP, DOWN).
    Settled,
}

/// One change of a reply and everything the reader does for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncStep {
    pub change: StatusChange,
    pub holding: Holding,
    /// Started outside nginx (`supervisorctl`, supervisord's autorestart, a program running
    /// when nginx came): counted as a start by hand.
    pub started_outside: bool,
    /// The start nginx had pending ends here.
    pub ends_pending_start: bool,
    /// ... and it failed: its program exited at start-up (a failed start, backed off).
    pub start_failed: bool,
}

/// The steps a reply calls for, backend by backend (see `reconcile_plan`).
pub fn sync_steps(backends: &[BackendAtReply]) -> Vec<SyncStep> {
    reconcile_plan(backends)
        .into_iter()
        .map(|change| {
            let backend = &backends[change.index];
            let ends_pending_start = change.to == BackendStatus::Down && backend.pending_start;
            SyncStep {
                change,
                holding: match change.to {
                    BackendStatus::StartingUp => Holding::OwnProbe,
                    BackendStatus::ShuttingDown => Holding::Observed,
                    _ => Holding::Settled,
                },
                started_outside: change.from == BackendStatus::Down
                    && matches!(change.to, BackendStatus::StartingUp | BackendStatus::Up),
                ends_pending_start,
                start_failed: ends_pending_start && sync_fails_start(change.to, backend.observed),
            }
        })
        .collect()
}

pub fn reconcile_plan(backends: &[BackendAtReply]) -> Vec<StatusChange> {
    backends
        .iter()
        .enumerate()
        .filter(|(_, backend)| !backend.changed_since_sent)
        .filter_map(|(index, backend)| {
            reconciled_status(backend).map(|to| StatusChange {
                index,
                from: backend.status,
                to,
            })
        })
        .collect()
}

/// The status supervisord's view implies for a backend, or `None` to leave it as it is.
///
/// A command in flight (STARTING_UP, SHUTTING_DOWN) owns the status until it settles, unless it
/// is stale (its worker is gone, or it outlived its start phase). A program STARTING or
/// RUNNING becomes STARTING_UP (the caller probes it; see the module's comment) unless the
/// backend is UP with the same process as before; one STOPPING outside nginx becomes
/// SHUTTING_DOWN, so that no request goes to it and none starts it while it stops (supervisord
/// refuses a start then); anything else is DOWN. A stale STARTING_UP whose program runs had
/// its start phase end without an answer: it is DOWN, and the next request's start finds the
/// program started and probes it again.
pub fn reconciled_status(backend: &BackendAtReply) -> Option<BackendStatus> {
    let current = backend.status;
    let in_flight = matches!(
        current,
        BackendStatus::StartingUp | BackendStatus::ShuttingDown
    );
    if in_flight && !backend.command_is_stale {
        return None;
    }
    let implied = match backend.observed {
        Some(ProcessState::Starting | ProcessState::Running)
            if current == BackendStatus::Up && !backend.restarted =>
        {
            return None
        }
        Some(ProcessState::Running) if !backend.can_probe => BackendStatus::Up,
        Some(ProcessState::Starting | ProcessState::Running)
            if current == BackendStatus::StartingUp =>
        {
            BackendStatus::Down
        }
        Some(ProcessState::Starting | ProcessState::Running)
            if current == BackendStatus::Down && backend.backing_off =>
        {
            return None
        }
        Some(ProcessState::Starting | ProcessState::Running) => BackendStatus::StartingUp,
        Some(ProcessState::Stopping) => BackendStatus::ShuttingDown,
        _ => BackendStatus::Down,
    };
    (implied != current).then_some(implied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::process_state::restarted;
    use BackendStatus::*;

    fn at_reply(status: BackendStatus, observed: Option<ProcessState>) -> BackendAtReply {
        BackendAtReply {
            status,
            observed,
            can_probe: true,
            ..BackendAtReply::default()
        }
    }

    fn status_after(
        status: BackendStatus,
        observed: Option<ProcessState>,
        adjust: impl FnOnce(&mut BackendAtReply),
    ) -> Option<BackendStatus> {
        let mut backend = at_reply(status, observed);
        adjust(&mut backend);
        reconciled_status(&backend)
    }

    #[test]
    fn running_is_only_starting_until_the_probe_says_up() {
        let running = Some(ProcessState::Running);
        // A fresh shared state, a start outside nginx, a reload: probed before it is UP.
        assert_eq!(status_after(Down, running, |_| ()), Some(StartingUp));
        assert_eq!(status_after(Up, running, |_| ()), None);
        // Another process than the one that was UP: a hand restart, probed again.
        assert_eq!(
            status_after(Up, running, |b| b.restarted = true),
            Some(StartingUp)
        );
        // Nothing to probe: supervisord's word is all there is.
        assert_eq!(
            status_after(Down, running, |b| b.can_probe = false),
            Some(Up)
        );
        // A failed start waits out its backoff before it is probed again.
        assert_eq!(status_after(Down, running, |b| b.backing_off = true), None);
        // A probe under way is left alone; one that outlived its start phase failed.
        assert_eq!(status_after(StartingUp, running, |_| ()), None);
        assert_eq!(
            status_after(StartingUp, running, |b| b.command_is_stale = true),
            Some(Down)
        );
    }

    #[test]
    fn settled_backends_that_lost_their_program_go_down() {
        for gone in [
            ProcessState::Stopped,
            ProcessState::Exited,
            ProcessState::Fatal,
            ProcessState::Backoff,
            ProcessState::Unknown,
        ] {
            assert_eq!(status_after(Up, Some(gone), |_| ()), Some(Down), "{gone:?}");
            assert_eq!(status_after(Down, Some(gone), |_| ()), None, "{gone:?}");
        }
        assert_eq!(
            status_after(Up, None, |_| ()),
            Some(Down),
            "unknown to supervisord"
        );
    }

    #[test]
    fn hand_actions_are_followed_as_they_happen() {
        let starting = Some(ProcessState::Starting);
        let stale = |b: &mut BackendAtReply| b.command_is_stale = true;
        // A hand start or restart: requests wait for the program instead of starting it.
        assert_eq!(status_after(Down, starting, |_| ()), Some(StartingUp));
        assert_eq!(
            status_after(Up, starting, |b| {
                b.command_is_stale = true;
                b.restarted = true;
            }),
            Some(StartingUp)
        );
        // UP while the same process is still within its startsecs: nothing new.
        assert_eq!(status_after(Up, starting, stale), None);
        assert!(restarted(41, 42));
        assert!(!restarted(42, 42));
        assert!(!restarted(0, 42), "nothing ran before");
        assert!(!restarted(42, 0));
        // A hand stop: no request goes to it and none starts it while it stops.
        let stopping = Some(ProcessState::Stopping);
        assert_eq!(status_after(Up, stopping, |_| ()), Some(ShuttingDown));
        assert_eq!(status_after(Down, stopping, |_| ()), Some(ShuttingDown));
        // An observed stop keeps following supervisord (it is stale from the start).
        assert_eq!(
            status_after(ShuttingDown, Some(ProcessState::Stopped), stale),
            Some(Down)
        );
        assert_eq!(
            status_after(ShuttingDown, starting, stale),
            Some(StartingUp)
        );
    }

    #[test]
    fn commands_in_flight_are_left_alone_until_stale() {
        let stopped = Some(ProcessState::Stopped);
        assert_eq!(status_after(ShuttingDown, stopped, |_| ()), None);
        assert_eq!(
            status_after(StartingUp, Some(ProcessState::Fatal), |b| b
                .command_is_stale =
                true),
            Some(Down)
        );
        assert_eq!(
            status_after(ShuttingDown, stopped, |b| b.command_is_stale = true),
            Some(Down)
        );
    }

    #[test]
    fn each_change_says_how_it_is_held_and_what_it_ends() {
        let found_running = at_reply(Down, Some(ProcessState::Running));
        let mut exited = at_reply(Up, Some(ProcessState::Exited));
        exited.pending_start = true;
        let mut stopped_by_hand = at_reply(Up, Some(ProcessState::Stopped));
        stopped_by_hand.pending_start = true;
        let stopping = at_reply(Up, Some(ProcessState::Stopping));
        let steps = sync_steps(&[found_running, exited, stopped_by_hand, stopping]);
        let summary: Vec<_> = steps
            .iter()
            .map(|s| {
                (
                    s.change.index,
                    s.holding,
                    s.started_outside,
                    s.ends_pending_start,
                    s.start_failed,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, Holding::OwnProbe, true, false, false),
                // Listened (the probe made it UP), then died within startsecs: a failed start.
                (1, Holding::Settled, false, true, true),
                // Stopped by hand: the pending start ends, but did not fail.
                (2, Holding::Settled, false, true, false),
                (3, Holding::Observed, false, false, false),
            ]
        );
    }

    #[test]
    fn settled_backends_follow_supervisord() {
        let plan = reconcile_plan(&[
            at_reply(Down, Some(ProcessState::Running)),
            at_reply(Up, Some(ProcessState::Exited)),
            at_reply(Up, Some(ProcessState::Running)),
            at_reply(Up, None),
        ]);
        assert_eq!(
            plan,
            vec![
                StatusChange {
                    index: 0,
                    from: Down,
                    to: StartingUp
                },
                StatusChange {
                    index: 1,
                    from: Up,
                    to: Down
                },
                StatusChange {
                    index: 3,
                    from: Up,
                    to: Down
                },
            ]
        );
    }

    #[test]
    fn a_backend_that_changed_after_the_call_was_sent_is_left_alone() {
        // The probe made it UP after supervisord answered "STARTING": the old news loses.
        let mut backend = at_reply(Up, Some(ProcessState::Stopped));
        backend.changed_since_sent = true;
        assert!(reconcile_plan(&[backend]).is_empty());
    }

    #[test]
    fn commands_in_flight_are_left_to_their_worker_unless_stale() {
        let mut backend = at_reply(StartingUp, Some(ProcessState::Fatal));
        assert!(reconcile_plan(&[backend]).is_empty());
        backend.command_is_stale = true;
        assert_eq!(
            reconcile_plan(&[backend]),
            vec![StatusChange {
                index: 0,
                from: StartingUp,
                to: Down
            }]
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_state() -> impl Strategy<Value = Option<ProcessState>> {
        proptest::option::of(
            prop_oneof![
                Just(0i64),
                Just(10),
                Just(20),
                Just(30),
                Just(40),
                Just(100),
                Just(200),
                Just(1000)
            ]
            .prop_map(ProcessState::from_code),
        )
    }

    fn any_backend() -> impl Strategy<Value = BackendAtReply> {
        (0u8..4, any_state(), any::<[bool; 6]>()).prop_map(|(raw, observed, flags)| {
            BackendAtReply {
                status: BackendStatus::from_raw(raw).unwrap(),
                changed_since_sent: flags[0],
                command_is_stale: flags[1],
                observed,
                restarted: flags[2],
                can_probe: flags[3],
                backing_off: flags[4],
                pending_start: flags[5],
            }
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// No read of supervisord makes a probeable backend UP, whatever it says; a command in
        /// flight that is not stale is never touched; a backend waiting out a backoff is never
        /// made starting; and a backend that changed since the call was sent is left alone.
        #[test]
        fn supervisords_word_alone_never_makes_a_backend_up(
            backends in proptest::collection::vec(any_backend(), 1..6),
        ) {
            for change in reconcile_plan(&backends) {
                let backend = backends[change.index];
                prop_assert!(!backend.changed_since_sent);
                prop_assert_ne!(change.from, change.to);
                if change.to == BackendStatus::Up {
                    prop_assert!(!backend.can_probe);
                    prop_assert_eq!(backend.observed, Some(ProcessState::Running));
                }
                if matches!(backend.status, BackendStatus::StartingUp | BackendStatus::ShuttingDown) {
                    prop_assert!(backend.command_is_stale);
                }
                if backend.status == BackendStatus::Down && backend.backing_off {
                    prop_assert_ne!(change.to, BackendStatus::StartingUp);
                }
            }
            // Only a pending start ends, only on DOWN; it failed only if its program exited.
            for step in sync_steps(&backends) {
                let backend = backends[step.change.index];
                prop_assert_eq!(
                    step.ends_pending_start,
                    backend.pending_start && step.change.to == BackendStatus::Down
                );
                if step.start_failed {
                    prop_assert!(step.ends_pending_start);
                    prop_assert!(backend.observed.is_some_and(crate::start::start_watch::exited_at_start_up));
                }
                prop_assert_eq!(
                    step.holding == Holding::OwnProbe,
                    step.change.to == BackendStatus::StartingUp
                );
            }
        }
    }
}
