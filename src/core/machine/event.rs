//! What happens to a backend, as the edge reports it to the machine.

use crate::backend_event::BackendEvent;
use crate::backend_status::{BackendStatus, Command};
use crate::commands::Mode;
use crate::protocol::call_outcome::CallError;
use crate::protocol::process_state::ProcessState;
use crate::start::failure::ProgramSeen;
use crate::start::start_watch::PendingStart;

/// When and by whom an event is handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct At {
    /// nginx's monotonic msec.
    pub now_ms: u64,
    /// The claim token of the worker handling it (the owner of what it begins).
    pub me: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A start or stop is asked for: a request found no backend up, `/_start` or `/_stop`,
    /// the scaler, a C balancer. `cause` is counted in the metrics when it goes ahead;
    /// `pending` says who a start is for.
    Asked {
        command: Command,
        mode: Mode,
        cause: Option<BackendEvent>,
        pending: PendingStart,
    },
    /// The worker stopping the backend waits for its requests to drain: its stop call goes
    /// out by `due_ms` at the latest.
    Draining { due_ms: u64 },
    /// This worker sends the command in flight again (its worker died, or it waited for
    /// supervisord to answer again), as it found it: in `status`, held by `owner`, `parked`
    /// or not. Should another worker have taken it over since, nothing happens.
    TakenOver {
        status: BackendStatus,
        owner: u64,
        parked: bool,
    },
    /// supervisord answered a start or stop this worker sent (or the call failed).
    Answered(Answer),
    /// supervisord refused a start as if the program exited at start-up; this is the
    /// program's state read just after (`None`: it could not be read; `supervisord_away`: for
    /// supervisord was going away, as when it shuts down and stops its programs).
    ExitExplained {
        state: Option<ProcessState>,
        supervisord_away: bool,
    },
    /// A readiness probe saw a connection accepted; `sent_ms`: when nginx sent the start
    /// (`None` for a start made outside nginx, which has no cold-start time).
    Accepted { sent_ms: Option<u64> },
    /// The start phase begun at change `start` failed: no connection accepted by its end, or
    /// its program exited (the watch saw it).
    StartFailed { start: u64 },
    /// A read of supervisord's program states, for this backend.
    Synced(Sync),
    /// The failure rule checked this backend after its requests failed: `accepts` whether any
    /// of its addresses accepted a connection, `program` what supervisord says.
    FailureChecked {
        mode: Mode,
        accepts: bool,
        program: ProgramSeen,
        /// Its program has been running for less than the start phase (by supervisord's clock).
        young: bool,
        /// Its program's process id now (0: not running).
        pid: i64,
    },
}

/// supervisord's answer to a command.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub command: Command,
    /// ALREADY_STARTED and NOT_RUNNING count as success.
    pub outcome: Result<(), CallError>,
    /// The program was already where the command wanted it (ALREADY_STARTED, NOT_RUNNING):
    /// someone else started or stopped it.
    pub already: bool,
    /// Someone (a control request) is answered with the outcome at once.
    pub caller_waits: bool,
    /// A readiness probe settles this start.
    pub probing: bool,
    pub supervisord_unreachable: bool,
    /// Another upstream manages the same program: it should see the change at once.
    pub shared_in_host: bool,
    /// When the call was sent.
    pub sent_ms: u64,
}

/// What one read of supervisord says of this backend's program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sync {
    /// Its state; `None` when supervisord has no such program.
    pub observed: Option<ProcessState>,
    /// Its process id (0: not running).
    pub pid: i64,
    /// The backend's change count when the read was sent.
    pub changes_when_sent: u64,
    /// It has an address the readiness probe can try.
    pub can_probe: bool,
    /// A command older than this lost its worker (twice `supervisord_timeout`).
    pub stale_after_ms: u64,
}
