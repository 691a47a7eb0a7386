//! The machine's paths, one by one, and the properties that hold for every event.

use proptest::prelude::*;

use super::*;
use crate::backend_event::BackendEvent;
use crate::backend_status::{BackendStatus, Command};
use crate::commands::{Decision, Mode};
use crate::protocol::call_outcome::CallError;
use crate::protocol::command_reply::ReplyLog;
use crate::protocol::process_state::ProcessState;
use crate::protocol::xmlrpc::Fault;
use crate::start::failure::{FailureAction, ProgramSeen};
use crate::start::start_backoff::StartBackoff;
use crate::start::start_watch::PendingStart;
use BackendStatus::*;

const ME: u64 = 7;

fn at(now_ms: u64) -> At {
    At { now_ms, me: ME }
}

fn ask(command: Command) -> Event {
    Event::Asked {
        command,
        mode: Mode::Supervised,
        cause: Some(BackendEvent::StartOnDemand),
        pending: PendingStart::OnDemand,
    }
}

fn answer(command: Command, outcome: Result<(), CallError>) -> Event {
    Event::Answered(Answer {
        command,
        outcome,
        already: false,
        caller_waits: false,
        probing: true,
        supervisord_unreachable: false,
        shared_in_host: false,
        sent_ms: 1_000,
    })
}

fn fault(code: i64) -> Result<(), CallError> {
    Err(CallError::Fault(Fault {
        code,
        string: "X".into(),
    }))
}

fn sync(observed: Option<ProcessState>, pid: i64, changes_when_sent: u64) -> Event {
    Event::Synced(Sync {
        observed,
        pid,
        changes_when_sent,
        can_probe: true,
        stale_after_ms: 4_000,
    })
}

/// Runs `events` from a fresh DOWN backend, one millisecond apart from 1 s on.
fn run(events: &[Event]) -> (Backend, Vec<Vec<Action>>) {
    let mut backend = Backend::default();
    let mut actions = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let step = transition(&backend, event, at(1_000 + n as u64));
        backend = step.next;
        actions.push(step.actions);
    }
    (backend, actions)
}

#[test]
fn an_on_demand_start_is_up_only_once_a_connection_is_accepted() {
    let (backend, actions) = run(&[ask(Command::Start), answer(Command::Start, Ok(()))]);
    assert_eq!(backend.status, StartingUp);
    assert_eq!(backend.command.owner, ME);
    assert_eq!(
        backend.pending_start, None,
        "the answer settled the pending start"
    );
    assert!(actions[0].contains(&Action::CarryOut(Command::Start)));
    assert!(actions[0].contains(&Action::Count(BackendEvent::StartOnDemand)));
    assert_eq!(actions[1], vec![Action::Tell(Tell::ConfirmedForProbe)]);
    let step = transition(&backend, &Event::Accepted { sent_ms: Some(900) }, at(1_500));
    assert_eq!(step.next.status, Up);
    assert_eq!(step.next.up_since_ms, 1_500);
    assert_eq!(step.next.command, CommandHolder::default());
    assert!(step.has(&Action::Ready { took_ms: 600 }));
    assert!(step.has(&Action::WakeHeld));
}

#[test]
fn only_a_program_this_nginx_started_is_its_own() {
    let (ours, _) = run(&[ask(Command::Start), answer(Command::Start, Ok(()))]);
    assert!(ours.started_here);
    let up = transition(&ours, &Event::Accepted { sent_ms: None }, at(2_000)).next;
    assert!(up.started_here);
    // Another nginx started it first: supervisord answers ALREADY_STARTED.
    let (asked, _) = run(&[ask(Command::Start)]);
    let already = Event::Answered(Answer {
        command: Command::Start,
        outcome: Ok(()),
        already: true,
        caller_waits: false,
        probing: true,
        supervisord_unreachable: false,
        shared_in_host: false,
        sent_ms: 1_000,
    });
    let theirs = transition(&asked, &already, at(1_100)).next;
    assert_eq!(theirs.status, StartingUp);
    assert!(!theirs.started_here);
    // Found running by a read: not ours either.
    let found = transition(
        &Backend::default(),
        &sync(Some(ProcessState::Running), 5, 0),
        at(1_000),
    )
    .next;
    assert!(!found.started_here);
    // Down forgets it.
    let down = transition(
        &up,
        &sync(Some(ProcessState::Exited), 0, up.changes),
        at(3_000),
    )
    .next;
    assert_eq!(down.status, Down);
    assert!(!down.started_here);
}

#[test]
fn a_second_ask_is_declined_while_the_first_is_under_way() {
    let (backend, actions) = run(&[ask(Command::Start), ask(Command::Start), ask(Command::Stop)]);
    assert_eq!(backend.status, StartingUp);
    assert_eq!(actions[1], vec![Action::Declined(Decision::InProgress)]);
    assert_eq!(actions[2], vec![Action::Declined(Decision::Conflict)]);
}

#[test]
fn every_kind_of_failed_start_backs_off() {
    let cases: Vec<(&str, Vec<Event>)> = vec![
        (
            "bad name",
            vec![ask(Command::Start), answer(Command::Start, fault(10))],
        ),
        (
            "401",
            vec![
                ask(Command::Start),
                answer(Command::Start, Err(CallError::Unauthorized)),
            ],
        ),
        (
            "500",
            vec![
                ask(Command::Start),
                answer(Command::Start, Err(CallError::HttpStatus(500))),
            ],
        ),
        (
            "malformed",
            vec![
                ask(Command::Start),
                answer(Command::Start, Err(CallError::Malformed("x".into()))),
            ],
        ),
        (
            "time-out",
            vec![
                ask(Command::Start),
                answer(Command::Start, Err(CallError::TimedOut)),
            ],
        ),
        (
            "exit at start-up",
            vec![
                ask(Command::Start),
                answer(Command::Start, fault(50)),
                Event::ExitExplained {
                    state: Some(ProcessState::Backoff),
                    supervisord_away: false,
                },
            ],
        ),
        (
            "never listened",
            vec![ask(Command::Start), Event::StartFailed { start: 1 }],
        ),
        (
            "stopped after the start",
            vec![
                ask(Command::Start),
                answer(Command::Start, Ok(())),
                Event::StartFailed { start: 1 },
            ],
        ),
    ];
    for (name, events) in cases {
        let (backend, _) = run(&events);
        assert_eq!(backend.status, Down, "{name}");
        assert_eq!(backend.failed_starts, 1, "{name}");
        assert_eq!(backend.backoff.failures, 1, "{name}");
        assert!(backend.backing_off(1_010), "{name}");
        assert_eq!(backend.pending_start, None, "{name}");
    }
}

#[test]
fn a_bad_name_marks_the_program_missing_until_a_read_finds_it() {
    let (backend, _) = run(&[ask(Command::Start), answer(Command::Start, fault(10))]);
    assert!(backend.program_missing);
    let step = transition(&backend, &sync(None, 0, backend.changes), at(5_000));
    assert!(step.next.program_missing);
    assert!(
        !step.has(&Action::Tell(Tell::ProgramMissing)),
        "said once, by the answer's line"
    );
    let step = transition(
        &step.next,
        &sync(Some(ProcessState::Stopped), 0, step.next.changes),
        at(6_000),
    );
    assert!(!step.next.program_missing);
}

#[test]
fn a_program_found_running_is_probed_not_taken_for_up() {
    let step = transition(
        &Backend::default(),
        &sync(Some(ProcessState::Running), 42, 0),
        at(2_000),
    );
    assert_eq!(step.next.status, StartingUp);
    assert_eq!(step.next.command.owner, ME);
    assert_eq!(step.next.known_pid, 42);
    assert!(step.has(&Action::ProbeStart));
    assert!(step.has(&Action::Count(BackendEvent::StartByHand)));
    // The next read leaves the probe alone.
    let again = transition(
        &step.next,
        &sync(Some(ProcessState::Running), 42, step.next.changes),
        at(3_000),
    );
    assert_eq!(
        again.next,
        Backend {
            known_pid: 42,
            ..step.next
        }
    );
    assert!(again.actions.is_empty());
}

#[test]
fn a_read_sent_before_a_change_leaves_the_backend_alone() {
    let (backend, _) = run(&[ask(Command::Start)]);
    let step = transition(
        &backend,
        &sync(Some(ProcessState::Stopped), 0, 0),
        at(1_100),
    );
    assert_eq!(step.next.status, StartingUp);
}

#[test]
fn an_away_supervisord_parks_the_start_and_the_takeover_sends_it_again() {
    let (backend, _) = run(&[ask(Command::Start)]);
    let away = Event::Answered(Answer {
        supervisord_unreachable: true,
        ..match answer(Command::Start, Err(CallError::Transport("refused".into()))) {
            Event::Answered(answer) => answer,
            _ => unreachable!(),
        }
    });
    let parked = transition(&backend, &away, at(1_100));
    assert!(parked.next.command.parked);
    assert_eq!(parked.next.status, StartingUp);
    assert_eq!(parked.next.failed_starts, 0, "an outage is no failed start");
    let found = Event::TakenOver {
        status: StartingUp,
        owner: ME,
        parked: true,
    };
    let resent = transition(
        &parked.next,
        &found,
        At {
            now_ms: 9_000,
            me: 8,
        },
    );
    assert_eq!(
        resent.next.command,
        CommandHolder {
            owner: 8,
            began_ms: 9_000,
            parked: false,
            cut: false,
        }
    );
    assert!(resent.has(&Action::CarryOut(Command::Start)));
    assert!(resent.next.pending_start.is_some());
    // A second worker that found it parked too comes too late.
    let late = transition(
        &resent.next,
        &found,
        At {
            now_ms: 9_001,
            me: 9,
        },
    );
    assert!(late.actions.is_empty());
    assert_eq!(late.next, resent.next);
}

#[test]
fn a_start_cut_off_by_a_restarting_supervisord_waits_once_and_a_second_cut_fails_it() {
    let (backend, _) = run(&[ask(Command::Start)]);
    let cut = answer(Command::Start, Err(CallError::Cut("reset".into())));
    let parked = transition(&backend, &cut, at(1_100));
    assert_eq!(parked.next.status, StartingUp);
    assert!(parked.next.command.parked && parked.next.command.cut);
    assert_eq!(parked.next.failed_starts, 0);
    let found = Event::TakenOver {
        status: StartingUp,
        owner: ME,
        parked: true,
    };
    let resent = transition(&parked.next, &found, at(5_000));
    assert!(resent.has(&Action::CarryOut(Command::Start)));
    assert!(resent.next.command.cut, "the take-over remembers the cut");
    let failed = transition(&resent.next, &cut, at(5_100));
    assert_eq!(failed.next.status, Down);
    assert_eq!(failed.next.failed_starts, 1);
    assert!(failed.next.backing_off(5_200));
    // A new start begins with a clean slate.
    let again = transition(&failed.next, &ask(Command::Start), at(9_000));
    assert!(!again.next.command.cut);
}

#[test]
fn a_start_refused_while_supervisord_stops_the_program_is_followed_not_failed() {
    for (state, to) in [
        (ProcessState::Stopping, ShuttingDown),
        (ProcessState::Stopped, Down),
        (ProcessState::Starting, StartingUp),
    ] {
        let (backend, actions) = run(&[
            ask(Command::Start),
            answer(Command::Start, fault(40)),
            Event::ExitExplained {
                state: Some(state),
                supervisord_away: false,
            },
        ]);
        assert_eq!(backend.status, to);
        assert_eq!(backend.failed_starts, 0);
        assert_eq!(actions[1], vec![Action::AskWhyItExited]);
        assert_eq!(actions[2].contains(&Action::ProbeStart), to == StartingUp);
        // A start phase it follows is owned (the reads leave it to this worker's probe).
        if to == StartingUp {
            assert_eq!(backend.command.owner, ME);
        } else {
            assert_eq!(backend.command.owner, 0);
        }
    }
}

#[test]
fn a_start_cut_short_by_supervisord_going_away_is_no_failed_start() {
    let asked = run(&[ask(Command::Start), answer(Command::Start, fault(40))]).0;
    let away = transition(
        &asked,
        &Event::ExitExplained {
            state: None,
            supervisord_away: true,
        },
        at(2_000),
    );
    assert_eq!(away.next.status, Down);
    assert_eq!(away.next.failed_starts, 0);
    assert!(!away.next.backing_off(2_001));
    // Unread for another reason: the exit counts.
    let unread = transition(
        &asked,
        &Event::ExitExplained {
            state: None,
            supervisord_away: false,
        },
        at(2_000),
    );
    assert_eq!(unread.next.failed_starts, 1);
}

#[test]
fn a_probe_of_an_older_start_phase_fails_nothing() {
    let (backend, _) = run(&[ask(Command::Start)]);
    let step = transition(
        &backend,
        &Event::StartFailed {
            start: backend.changes - 1,
        },
        at(2_000),
    );
    assert_eq!(step.next, backend);
    assert!(step.actions.is_empty());
}

#[test]
fn the_failure_rule_restarts_only_an_up_backend() {
    let checked = |status| {
        let backend = Backend {
            status,
            ..Backend::default()
        };
        transition(
            &backend,
            &Event::FailureChecked {
                mode: Mode::Supervised,
                accepts: false,
                program: ProgramSeen::Known(Some(ProcessState::Running)),
                young: false,
                pid: 42,
            },
            at(1_000),
        )
    };
    let up = checked(Up);
    assert_eq!(up.next.status, ShuttingDown);
    assert!(up.has(&Action::CarryOut(Command::Stop)));
    for status in [StartingUp, Down, ShuttingDown] {
        let step = checked(status);
        assert_eq!(step.next.status, status);
        assert_eq!(
            step.actions,
            vec![Action::Tell(Tell::Failure {
                action: FailureAction::Ignore,
                before: status
            })]
        );
    }
}

#[test]
fn a_young_program_is_followed_only_when_it_is_another_process_than_nginx_saw() {
    let up = Backend {
        status: Up,
        known_pid: 5,
        ..Backend::default()
    };
    let checked = |pid| {
        transition(
            &up,
            &Event::FailureChecked {
                mode: Mode::Supervised,
                accepts: false,
                program: ProgramSeen::Known(Some(ProcessState::Running)),
                young: true,
                pid,
            },
            at(1_000),
        )
    };
    // The process nginx saw, crashed or hung (supervisord has yet to notice): restarted.
    assert!(checked(5).has(&Action::CarryOut(Command::Stop)));
    // Another process, started a moment ago by someone else: followed and probed.
    let followed = checked(6);
    assert_eq!(followed.next.status, StartingUp);
    assert!(followed.has(&Action::ProbeStart));
}

/// Found by `held_again.rs` on a busy machine: a backend taken as UP from the configuration
/// (`supervisord_inherit_backend_status`) failed its first request before nginx had read
/// supervisord once; its young program was taken for someone else's start and followed until
/// `supervisord_timeout` instead of restarted.
#[test]
fn a_young_program_nginx_never_read_is_restarted_as_ever() {
    let up = Backend {
        status: Up,
        known_pid: NEVER_READ,
        ..Backend::default()
    };
    let step = transition(
        &up,
        &Event::FailureChecked {
            mode: Mode::Supervised,
            accepts: false,
            program: ProgramSeen::Known(Some(ProcessState::Running)),
            young: true,
            pid: 6,
        },
        at(1_000),
    );
    assert!(step.has(&Action::CarryOut(Command::Stop)));
    // The first read records the pid without taking it for a restart.
    let sync = Sync {
        observed: Some(ProcessState::Running),
        pid: 6,
        can_probe: true,
        stale_after_ms: 60_000,
        ..Sync::default()
    };
    let read = transition(&up, &Event::Synced(sync), at(1_000));
    assert_eq!(read.next.known_pid, 6);
    assert_eq!(read.next.status, Up);
}

#[test]
fn a_failed_stop_puts_the_backend_back_up_and_says_so() {
    let backend = Backend {
        status: Up,
        ..Backend::default()
    };
    let stopping = transition(&backend, &ask(Command::Stop), at(1_000)).next;
    let step = transition(
        &stopping,
        &answer(Command::Stop, Err(CallError::HttpStatus(500))),
        at(1_100),
    );
    assert_eq!(step.next.status, Up);
    assert_eq!(
        step.tell(),
        Some(&Tell::Reply {
            log: ReplyLog::Failed,
            before: ShuttingDown,
            after: Up,
            backoff: None
        })
    );
}

#[test]
fn leaving_up_after_a_while_forgets_the_failed_starts() {
    let backend = Backend {
        status: Up,
        up_since_ms: 1_000,
        backoff: StartBackoff {
            failures: 3,
            last_failure_ms: 500,
        },
        ..Backend::default()
    };
    let soon = transition(&backend, &sync(Some(ProcessState::Exited), 0, 0), at(2_000));
    assert_eq!(soon.next.status, Down);
    assert_eq!(soon.next.backoff.failures, 3);
    let later = transition(
        &backend,
        &sync(Some(ProcessState::Exited), 0, 0),
        at(60_000),
    );
    assert_eq!(later.next.backoff.failures, 0);
}

fn any_status() -> impl Strategy<Value = BackendStatus> {
    prop_oneof![Just(Up), Just(Down), Just(StartingUp), Just(ShuttingDown)]
}

fn any_state() -> impl Strategy<Value = Option<ProcessState>> {
    prop_oneof![
        Just(None),
        Just(Some(ProcessState::Stopped)),
        Just(Some(ProcessState::Starting)),
        Just(Some(ProcessState::Running)),
        Just(Some(ProcessState::Backoff)),
        Just(Some(ProcessState::Stopping)),
        Just(Some(ProcessState::Exited)),
        Just(Some(ProcessState::Fatal)),
    ]
}

fn any_outcome() -> impl Strategy<Value = Result<(), CallError>> {
    prop_oneof![
        Just(Ok(())),
        Just(fault(10)),
        Just(fault(40)),
        Just(fault(50)),
        Just(fault(6)),
        Just(Err(CallError::Transport("reset".into()))),
        Just(Err(CallError::Cut("reset".into()))),
        Just(Err(CallError::TimedOut)),
        Just(Err(CallError::Unauthorized)),
        Just(Err(CallError::HttpStatus(500))),
        Just(Err(CallError::NotXml)),
    ]
}

fn any_backend() -> impl Strategy<Value = Backend> {
    (
        any_status(),
        0u64..3,
        any::<bool>(),
        any::<bool>(),
        0u32..4,
        0u64..3,
        0u64..2_000,
    )
        .prop_map(
            |(status, owner, parked, pending, failures, changes, began_ms)| Backend {
                status,
                command: CommandHolder {
                    owner,
                    began_ms,
                    parked,
                    cut: false,
                },
                pending_start: pending.then_some(PendingStart::OnDemand),
                backoff: StartBackoff {
                    failures,
                    last_failure_ms: 500,
                },
                up_since_ms: 100,
                changes,
                ..Backend::default()
            },
        )
}

/// Every event a supervised backend with addresses to probe can meet.
fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (prop_oneof![Just(Command::Start), Just(Command::Stop)]).prop_map(ask),
        (0u64..4_000).prop_map(|due_ms| Event::Draining { due_ms }),
        (any_status(), 0u64..3, any::<bool>()).prop_map(|(status, owner, parked)| {
            Event::TakenOver {
                status,
                owner,
                parked,
            }
        }),
        (
            prop_oneof![Just(Command::Start), Just(Command::Stop)],
            any_outcome(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(command, outcome, caller_waits, unreachable)| {
                Event::Answered(Answer {
                    command,
                    outcome,
                    already: false,
                    caller_waits,
                    probing: true,
                    supervisord_unreachable: unreachable,
                    shared_in_host: false,
                    sent_ms: 900,
                })
            }),
        (any_state(), any::<bool>()).prop_map(|(state, supervisord_away)| Event::ExitExplained {
            state,
            supervisord_away,
        }),
        Just(Event::Accepted { sent_ms: Some(900) }),
        (0u64..4).prop_map(|start| Event::StartFailed { start }),
        (any_state(), 0i64..3, 0u64..4)
            .prop_map(|(observed, pid, changes)| sync(observed, pid, changes)),
        (any::<bool>(), any_state(), any::<bool>(), 0i64..3).prop_map(
            |(accepts, state, young, pid)| Event::FailureChecked {
                mode: Mode::Supervised,
                accepts,
                program: ProgramSeen::Known(state),
                young,
                pid,
            }
        ),
    ]
}

proptest! {
    #![proptest_config(crate::proptest_config())]

    /// Only an accepted connection makes a starting or down backend UP (a failed stop puts an
    /// UP backend back).
    #[test]
    fn nothing_but_an_accepted_connection_makes_a_backend_up(
        backend in any_backend(), event in any_event()
    ) {
        let step = transition(&backend, &event, at(2_000));
        if step.next.status == Up && backend.status != Up {
            let accepted = matches!(event, Event::Accepted { .. });
            let stop_failed = backend.status == ShuttingDown
                && matches!(&event, Event::Answered(a) if a.command == Command::Stop);
            prop_assert!(accepted || stop_failed, "{backend:?} {event:?} -> {:?}", step.next);
        }
    }

    /// A failed start always backs off, and is said once.
    #[test]
    fn every_failed_start_backs_off_and_is_said_once(
        backend in any_backend(), event in any_event()
    ) {
        let step = transition(&backend, &event, at(2_000));
        let failed = step.next.failed_starts - backend.failed_starts;
        prop_assert!(failed <= 1);
        if failed == 1 {
            prop_assert_eq!(step.next.backoff.failures, backend.backoff.failures.min(u32::MAX - 1) + 1);
            prop_assert_eq!(step.next.backoff.last_failure_ms, 2_000);
            prop_assert_eq!(step.next.status, Down);
            prop_assert!(step.has(&Action::WakeHeld));
            let lines = step.actions.iter().filter(|a| matches!(a, Action::Tell(_))).count();
            prop_assert!(lines <= 2, "{:?}", step.actions);
        } else {
            prop_assert_eq!(step.next.backoff.failures <= backend.backoff.failures, true);
        }
    }

    /// At most one command goes out per event, only by the worker that now holds it, and only
    /// from its transitional status.
    #[test]
    fn a_command_goes_out_once_from_its_holder(backend in any_backend(), event in any_event()) {
        let step = transition(&backend, &event, at(2_000));
        let carried: Vec<_> = step.actions.iter().filter_map(|a| match a {
            Action::CarryOut(command) => Some(*command),
            _ => None,
        }).collect();
        prop_assert!(carried.len() <= 1);
        if let Some(command) = carried.first() {
            prop_assert_eq!(step.next.status, command.transitional_status());
            prop_assert_eq!(step.next.command.owner, ME);
            prop_assert!(!step.next.command.parked);
        }
    }

    /// Every status change counts as a change (reads and probes of an older phase see it),
    /// and a settled status has no holder.
    #[test]
    fn status_changes_are_counted_and_settled_statuses_have_no_holder(
        backend in any_backend(), event in any_event()
    ) {
        let step = transition(&backend, &event, at(2_000));
        prop_assert!(step.next.changes >= backend.changes);
        if step.next.status != backend.status {
            prop_assert!(step.next.changes > backend.changes);
        }
        if step.next.changes != backend.changes && matches!(step.next.status, Up | Down) {
            prop_assert_eq!(step.next.command, CommandHolder::default());
        }
    }

    /// The failure rule never stops or restarts a backend in its start phase (this nginx's),
    /// nor a program started within the start phase (by anyone).
    #[test]
    fn the_failure_rule_leaves_a_start_phase_alone(
        backend in any_backend(), accepts in any::<bool>(), state in any_state(),
        young in any::<bool>()
    ) {
        let backend = Backend { status: StartingUp, ..backend };
        let step = transition(&backend, &Event::FailureChecked {
            mode: Mode::Supervised, accepts, program: ProgramSeen::Known(state),
            young, pid: 7,
        }, at(2_000));
        prop_assert_eq!(step.next, backend);
    }

    #[test]
    fn the_failure_rule_never_restarts_a_program_someone_just_started(
        backend in any_backend(), state in any_state()
    ) {
        let backend = Backend { status: Up, known_pid: 5, ..backend };
        let step = transition(&backend, &Event::FailureChecked {
            mode: Mode::Supervised, accepts: false, program: ProgramSeen::Known(state),
            young: true, pid: 6,
        }, at(2_000));
        prop_assert!(!step.has(&Action::CarryOut(Command::Stop)), "{:?}", step.actions);
    }
}

proptest! {
    #![proptest_config(crate::proptest_config())]

    /// Over any run of events from a fresh backend: one start at a time (a second goes out only
    /// when the first was taken over, or once the backend left STARTING_UP), and every failed
    /// start moved the backoff on by one.
    #[test]
    fn any_run_of_events_sends_one_start_at_a_time_and_backs_off_each_failure(
        events in proptest::collection::vec(any_event(), 1..30)
    ) {
        let mut backend = Backend::default();
        let mut start_in_flight = false;
        for (n, event) in events.iter().enumerate() {
            let step = transition(&backend, event, at(2_000 + n as u64 * 10));
            let sends_start = step.has(&Action::CarryOut(Command::Start));
            if sends_start && !matches!(event, Event::TakenOver { .. }) {
                prop_assert!(!start_in_flight, "a second start: {events:?}");
            }
            if step.next.failed_starts > backend.failed_starts {
                prop_assert_eq!(step.next.backoff.failures, backend.backoff.failures + 1);
            }
            backend = step.next;
            start_in_flight = (start_in_flight || sends_start) && backend.status == StartingUp;
        }
    }
}
