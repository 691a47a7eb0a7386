//! One backend's record as the machine reads and writes it.

use crate::backend_status::BackendStatus;
use crate::start::start_backoff::StartBackoff;
use crate::start::start_watch::PendingStart;

/// `Backend::known_pid` of a backend no read of supervisord has seen yet.
pub const NEVER_READ: i64 = -1;

/// What the shared zone keeps of one backend, read under the zone's lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub status: BackendStatus,
    /// Who carries its transitional status (STARTING_UP, SHUTTING_DOWN) out; meaningless in
    /// a settled status.
    pub command: CommandHolder,
    /// A start nginx sent whose outcome nobody has settled yet: whoever sees it end first
    /// (its answer, its probe, its watch, a read of supervisord) settles it, once.
    pub pending_start: Option<PendingStart>,
    pub backoff: StartBackoff,
    /// Since when it is UP (nginx's monotonic msec); meaningless in another status.
    pub up_since_ms: u64,
    /// supervisord has no program of its name (a fault or a read said so): never started on
    /// demand until a read finds the program.
    pub program_missing: bool,
    /// The process id of its program at the last read of supervisord (0: none;
    /// `NEVER_READ` before the first read).
    pub known_pid: i64,
    /// Failed starts so far.
    pub failed_starts: u64,
    /// This nginx started its program (it sent the start that made it run): only such a
    /// program is stopped for idleness or light load, so that one nginx never stops what
    /// another nginx in front of the same supervisord started and serves.
    pub started_here: bool,
    /// Status settings so far: a probe or watch belongs to the start phase begun at one count,
    /// and a read of supervisord sent before the last setting is older news than the record.
    pub changes: u64,
}

/// The holder of a transitional status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandHolder {
    /// The claim token of the worker carrying it out; 0 when nobody does (a start or stop
    /// seen outside nginx, which reads of supervisord follow).
    pub owner: u64,
    /// When it began (nginx's monotonic msec); for a drain, when its stop call is due at the
    /// latest, so that a live drain never looks orphaned.
    pub began_ms: u64,
    /// Its call could not reach supervisord: it is sent again once supervisord answers.
    pub parked: bool,
    /// A call of it was cut off before any answer (`CallError::Cut`): a second one is a
    /// verdict, not an outage.
    pub cut: bool,
}

impl Backend {
    /// Its command began more than `limit_ms` before `now_ms` (its worker may be gone).
    pub fn command_older_than(&self, now_ms: u64, limit_ms: u64) -> bool {
        now_ms.saturating_sub(self.command.began_ms) > limit_ms
    }

    /// It waits out the backoff of a failed start at `now_ms`.
    pub fn backing_off(&self, now_ms: u64) -> bool {
        self.backoff.wait_left_ms(now_ms).is_some()
    }
}
