//! The transition function: the one place that decides what an event does to a backend.

use crate::backend_event::BackendEvent;
use crate::backend_status::{BackendStatus, Command};
use crate::commands::{decide, Decision};
use crate::protocol::call_outcome::CallError;
use crate::protocol::command_reply::{reply_step, ReplyFacts, ReplyStep};
use crate::protocol::process_state::{restarted, ProcessState};
use crate::start::failure::{failure_action, FailureAction};
use crate::start::reconcile_plan::{sync_steps, BackendAtReply, Holding};
use crate::start::start_handshake::settle_ready;
use crate::start::start_watch::{start_refused_by_a_stop, PendingStart};

use super::action::{Action, Step, Tell};
use super::backend::{Backend, CommandHolder, NEVER_READ};
use super::event::{Answer, At, Event, Sync};

pub fn transition(backend: &Backend, event: &Event, at: At) -> Step {
    let mut step = Step {
        next: *backend,
        actions: Vec::new(),
    };
    match event {
        Event::Asked {
            command,
            mode,
            cause,
            pending,
        } => asked(&mut step, *command, *mode, *cause, *pending, at),
        Event::Draining { due_ms } => {
            if backend.status == BackendStatus::ShuttingDown {
                step.next.command = holder(at.me, *due_ms);
            }
        }
        Event::TakenOver {
            status,
            owner,
            parked,
        } => {
            let seen = (*status, *owner, *parked);
            let now = (
                backend.status,
                backend.command.owner,
                backend.command.parked,
            );
            if seen == now {
                taken_over(&mut step, at);
            }
        }
        Event::Answered(answer) => answered(&mut step, answer, at),
        Event::ExitExplained {
            state,
            supervisord_away,
        } => exit_explained(&mut step, *state, *supervisord_away, at),
        Event::Accepted { sent_ms } => {
            if let Some(up) = settle_ready(backend.status) {
                set_status(&mut step.next, up, at);
                if let Some(sent_ms) = sent_ms {
                    step.actions.push(Action::Ready {
                        took_ms: at.now_ms.saturating_sub(*sent_ms),
                    });
                }
                step.actions.push(Action::WakeHeld);
                step.actions.push(Action::Tell(Tell::Moved {
                    from: backend.status,
                    to: up,
                }));
            }
        }
        Event::StartFailed { start } => {
            if backend.status == BackendStatus::StartingUp && backend.changes == *start {
                step.next.pending_start = None;
                set_status(&mut step.next, BackendStatus::Down, at);
                fail_start(&mut step, at);
            }
        }
        Event::Synced(sync) => synced(&mut step, sync, at),
        Event::FailureChecked {
            mode,
            accepts,
            program,
            young,
            pid,
        } => {
            // Young and another process than the last read saw: someone (another nginx,
            // supervisorctl) started it since, and it may not listen yet. The process this
            // nginx saw running, crashed or hung, is restarted as ever; so is one taken as UP
            // from the configuration before any read (nothing says it is someone's start).
            let in_start_phase =
                *young && *pid != 0 && backend.known_pid != NEVER_READ && *pid != backend.known_pid;
            let action = failure_action(*mode, backend.status, *accepts, *program, in_start_phase);
            match action {
                FailureAction::MarkDown => {
                    set_status(&mut step.next, BackendStatus::Down, at);
                    step.actions.push(Action::Count(BackendEvent::StopFailure));
                }
                FailureAction::Restart => {
                    step.next.command = holder(at.me, at.now_ms);
                    set_status(&mut step.next, BackendStatus::ShuttingDown, at);
                    step.actions.push(Action::Count(BackendEvent::StopFailure));
                    step.actions.push(Action::CarryOut(Command::Stop));
                }
                FailureAction::Follow(status) => follow(&mut step, status, at),
                FailureAction::LeaveUp | FailureAction::Ignore => {}
            }
            step.actions.push(Action::Tell(Tell::Failure {
                action,
                before: backend.status,
            }));
        }
    }
    step
}

fn holder(owner: u64, began_ms: u64) -> CommandHolder {
    CommandHolder {
        owner,
        began_ms,
        parked: false,
        cut: false,
    }
}

/// Sets the status (every setting counts as a change, even to the same status: it begins a
/// new phase that older probes and reads must not act on).
fn set_status(next: &mut Backend, status: BackendStatus, at: At) {
    let was_up = next.status == BackendStatus::Up;
    if was_up && status != BackendStatus::Up {
        // A backend that stayed up long enough has recovered from its failed starts.
        next.backoff = next.backoff.after_up(next.up_since_ms, at.now_ms);
    }
    if status == BackendStatus::Up && !was_up {
        next.up_since_ms = at.now_ms;
    }
    if matches!(status, BackendStatus::Up | BackendStatus::Down) {
        next.command = CommandHolder::default();
    }
    if status == BackendStatus::Down {
        next.started_here = false;
    }
    next.status = status;
    next.changes += 1;
}

/// A failed start: counted, backed off, and the requests waiting for it answered.
fn fail_start(step: &mut Step, at: At) {
    step.next.failed_starts += 1;
    step.next.backoff = step.next.backoff.after_failure(at.now_ms);
    step.actions.push(Action::WakeHeld);
    step.actions.push(Action::Tell(Tell::FailedStart {
        backoff: step.next.backoff,
    }));
}

/// A start or stop seen under way outside nginx: a start phase is this worker's to probe, a
/// stop is followed by reads of supervisord (nobody holds it).
fn follow(step: &mut Step, status: BackendStatus, at: At) {
    if status == BackendStatus::StartingUp {
        step.next.command = holder(at.me, at.now_ms);
        set_status(&mut step.next, status, at);
        step.actions.push(Action::ProbeStart);
    } else {
        step.next.command = CommandHolder::default();
        set_status(&mut step.next, status, at);
    }
}

fn asked(
    step: &mut Step,
    command: Command,
    mode: crate::commands::Mode,
    cause: Option<BackendEvent>,
    pending: PendingStart,
    at: At,
) {
    match decide(command, step.next.status, mode) {
        Decision::Apply {
            status,
            ask_supervisord,
        } => {
            if ask_supervisord {
                step.next.command = holder(at.me, at.now_ms);
                // A stop ends whatever start was pending.
                step.next.pending_start = (command == Command::Start).then_some(pending);
            }
            set_status(&mut step.next, status, at);
            if command == Command::Start {
                step.next.started_here = true;
            }
            if let Some(cause) = cause {
                step.actions.push(Action::Count(cause));
            }
            if ask_supervisord {
                step.actions.push(Action::CarryOut(command));
            }
        }
        declined => step.actions.push(Action::Declined(declined)),
    }
}

fn taken_over(step: &mut Step, at: At) {
    let command = match step.next.status {
        BackendStatus::StartingUp => Command::Start,
        BackendStatus::ShuttingDown => Command::Stop,
        _ => return,
    };
    step.next.command = CommandHolder {
        cut: step.next.command.cut,
        ..holder(at.me, at.now_ms)
    };
    step.next.pending_start = match command {
        Command::Start => step.next.pending_start.or(Some(PendingStart::ByHand)),
        Command::Stop => None,
    };
    step.actions.push(Action::CarryOut(command));
}

fn answered(step: &mut Step, answer: &Answer, at: At) {
    let before = step.next.status;
    let command = answer.command;
    if answer.outcome.is_ok() && answer.shared_in_host {
        step.actions.push(Action::ReadHostNow);
    }
    if command == Command::Start && answer.already && before == BackendStatus::StartingUp {
        // Someone else (another nginx, supervisorctl) started it: not this nginx's to stop.
        step.next.started_here = false;
    }
    let reply = reply_step(&ReplyFacts {
        command,
        outcome: answer.outcome.clone(),
        status: before,
        supervisord_unreachable: answer.supervisord_unreachable,
        caller_waits: answer.caller_waits,
        probing: answer.probing,
        cut_before: step.next.command.cut,
    });
    if reply.ends_pending_start(command) {
        step.next.pending_start = None;
    }
    let settle = match reply {
        ReplyStep::Park { quiet } => {
            step.next.command.parked = true;
            step.next.command.cut |= matches!(answer.outcome, Err(CallError::Cut(_)));
            step.actions.push(Action::Tell(Tell::Parked { quiet }));
            return;
        }
        ReplyStep::LeaveToProbe => {
            step.actions.push(Action::Tell(Tell::ConfirmedForProbe));
            return;
        }
        ReplyStep::AskWhyItExited => {
            step.actions.push(Action::AskWhyItExited);
            return;
        }
        ReplyStep::Settle(settle) => settle,
    };
    let settlement = settle.settlement;
    let mut backoff = None;
    if settlement.owned {
        set_status(&mut step.next, settlement.status, at);
        if settlement.failed_start {
            step.next.failed_starts += 1;
            step.next.backoff = step.next.backoff.after_failure(at.now_ms);
            backoff = Some(step.next.backoff);
            step.actions.push(Action::WakeHeld);
        }
        if settle.program_missing {
            step.next.program_missing = true;
        }
        if command == Command::Start && settlement.status == BackendStatus::Up {
            // Settled by supervisord's answer (nothing to probe): its cold-start time.
            step.actions.push(Action::Ready {
                took_ms: at.now_ms.saturating_sub(answer.sent_ms),
            });
        }
    }
    step.actions.push(Action::Tell(Tell::Reply {
        log: settle.log,
        before,
        after: step.next.status,
        backoff,
    }));
}

fn exit_explained(step: &mut Step, state: Option<ProcessState>, supervisord_away: bool, at: At) {
    let before = step.next.status;
    // Not pending any more: its watch or a read of supervisord saw the exit first, and said so.
    let pending = step.next.pending_start.take();
    if pending.is_none() || !matches!(before, BackendStatus::StartingUp | BackendStatus::Up) {
        step.actions
            .push(Action::Tell(Tell::SettledMeanwhile { status: before }));
        return;
    }
    // supervisord went away as it started the program (it stops its programs as it shuts
    // down): the start was cut short, not a program that exits at start-up.
    let went_with_supervisord =
        (state.is_none() && supervisord_away).then_some(BackendStatus::Down);
    if let Some(to) = state
        .and_then(start_refused_by_a_stop)
        .or(went_with_supervisord)
    {
        follow(step, to, at);
        step.actions.push(Action::WakeHeld);
        step.actions
            .push(Action::Tell(Tell::RefusedByAStop { from: before, to }));
        return;
    }
    set_status(&mut step.next, BackendStatus::Down, at);
    fail_start(step, at);
}

fn synced(step: &mut Step, sync: &Sync, at: At) {
    let backend = step.next;
    step.next.known_pid = sync.pid;
    let at_reply = BackendAtReply {
        status: backend.status,
        changed_since_sent: sync.changes_when_sent != backend.changes,
        command_is_stale: backend.command_older_than(at.now_ms, sync.stale_after_ms),
        observed: sync.observed,
        restarted: restarted(backend.known_pid.max(0), sync.pid),
        can_probe: sync.can_probe,
        backing_off: backend.backing_off(at.now_ms),
        pending_start: backend.pending_start.is_some(),
    };
    if let Some(change) = sync_steps(&[at_reply]).first() {
        let to = change.change.to;
        match change.holding {
            Holding::OwnProbe | Holding::Observed => follow(step, to, at),
            Holding::Settled => set_status(&mut step.next, to, at),
        }
        if change.started_outside {
            step.next.started_here = false;
            step.actions.push(Action::Count(BackendEvent::StartByHand));
        }
        if change.ends_pending_start {
            step.next.pending_start = None;
        }
        if change.start_failed {
            fail_start(step, at);
        } else {
            step.actions.push(Action::Tell(Tell::Moved {
                from: backend.status,
                to,
            }));
        }
    }
    let missing = sync.observed.is_none();
    if missing != backend.program_missing {
        step.next.program_missing = missing;
        if missing {
            step.actions.push(Action::Tell(Tell::ProgramMissing));
        }
    }
}
