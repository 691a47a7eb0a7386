//! What the edge carries out after a transition.

use crate::backend_event::BackendEvent;
use crate::backend_status::{BackendStatus, Command};
use crate::commands::Decision;
use crate::protocol::command_reply::ReplyLog;
use crate::start::failure::FailureAction;
use crate::start::start_backoff::StartBackoff;

use super::backend::Backend;

/// The record to store and what to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub next: Backend,
    pub actions: Vec<Action>,
}

impl Step {
    pub fn has(&self, wanted: &Action) -> bool {
        self.actions.contains(wanted)
    }

    /// The line the step asks for, if any.
    pub fn tell(&self) -> Option<&Tell> {
        self.actions.iter().find_map(|action| match action {
            Action::Tell(tell) => Some(tell),
            _ => None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// This worker now carries the command out: a start is sent at once, a stop after the
    /// backend's requests drained.
    CarryOut(Command),
    /// The command was not taken (already done, under way, or its opposite under way).
    Declined(Decision),
    /// Read the host's program states now: another upstream manages this program too.
    ReadHostNow,
    /// Ask supervisord why the program exited (`getProcessInfo`), then report `ExitExplained`.
    AskWhyItExited,
    /// Probe the backend and watch its program: this worker holds a start phase it did not
    /// send (made outside nginx, or followed after a refusal).
    ProbeStart,
    /// Requests held in this worker learn the news now, not at their next tick.
    WakeHeld,
    /// A start nginx sent ended UP (accepting connections) `took_ms` after it was sent.
    Ready {
        took_ms: u64,
    },
    Count(BackendEvent),
    Tell(Tell),
}

/// The one line of a step (the edge words it with what it knows: names, reasons, errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tell {
    /// supervisord's answer settled (or failed to settle) the command; `backoff` when it was
    /// a failed start.
    Reply {
        log: ReplyLog,
        before: BackendStatus,
        after: BackendStatus,
        backoff: Option<StartBackoff>,
    },
    /// The command waits for supervisord in its transitional status; `quiet`: the outage's
    /// one line tells it already.
    Parked { quiet: bool },
    /// supervisord confirmed the start; the probe settles it.
    ConfirmedForProbe,
    /// A start phase failed; the next start on demand waits out `backoff`.
    FailedStart { backoff: StartBackoff },
    /// A start supervisord refused while it stopped the program: followed, not failed.
    RefusedByAStop {
        from: BackendStatus,
        to: BackendStatus,
    },
    /// An answer or account came after the start was settled otherwise.
    SettledMeanwhile { status: BackendStatus },
    /// The status moved (`starting up -> up` after the probe, or a read of supervisord).
    Moved {
        from: BackendStatus,
        to: BackendStatus,
    },
    /// supervisord has no program of the backend's name (said once until it has).
    ProgramMissing,
    /// The failure rule's decision, from `before`.
    Failure {
        action: FailureAction,
        before: BackendStatus,
    },
}
