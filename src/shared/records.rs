//! The records in shared memory: per upstream, per backend status and in-flight count, the
//! same in every worker. Plain atomics, readable without the lock; a status changes only under
//! the zone's lock (see `lock.rs`), which also bumps the upstream's generation.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::core::backend_status::BackendStatus;
use crate::core::start_backoff::StartBackoff;

#[repr(C)]
pub struct SharedBackend {
    pub(super) status: AtomicU8,
    pub(super) in_flight: AtomicI64,
    /// When the command now in flight began (nginx's monotonic msec), to spot orphans.
    pub(super) command_started: AtomicU64,
    /// How many times the backend became UP; workers reset their balancer's failure count
    /// for it when this moves.
    pub(super) up_count: AtomicU64,
    /// How many times its status changed: a reply to a call sent before the last change is
    /// older news than the status.
    pub(super) changes: AtomicU64,
    /// Start backoff (`core::start_backoff`): consecutive on-demand starts that failed, when
    /// the last one failed, and since when the backend is UP (its failures are forgotten when
    /// it leaves UP after `STABLE_AFTER_MS`). Written under the lock.
    pub(super) start_failures: AtomicU32,
    pub(super) last_start_failure: AtomicU64,
    pub(super) up_since: AtomicU64,
    /// supervisord has no program of this backend's name; reported once until it has.
    pub(super) program_missing: AtomicBool,
    /// The process id of its program at the last read of supervisord (0: not running).
    pub(super) known_pid: AtomicI64,
}

impl SharedBackend {
    pub fn status(&self) -> BackendStatus {
        BackendStatus::from_raw(self.status.load(Ordering::Acquire)).unwrap_or(BackendStatus::Down)
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The command in flight began more than `limit_ms` ago.
    pub fn command_older_than(&self, now_ms: u64, limit_ms: u64) -> bool {
        now_ms.saturating_sub(self.command_started.load(Ordering::Relaxed)) > limit_ms
    }

    pub fn up_count(&self) -> u64 {
        self.up_count.load(Ordering::Acquire)
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Its failed-start record, for the on-demand start's backoff.
    pub fn start_backoff(&self) -> StartBackoff {
        StartBackoff {
            failures: self.start_failures.load(Ordering::Acquire),
            last_failure_ms: self.last_start_failure.load(Ordering::Acquire),
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[repr(C)]
pub struct SharedUpstream {
    pub(super) next: *mut SharedUpstream,
    pub(super) identity: u64,
    /// The reload (zone init) that last claimed this record; a record is claimed once per init.
    pub(super) claimed_in: u64,
    pub(super) generation: AtomicU64,
    /// When supervisord's view was last read by any worker (nginx's monotonic msec).
    pub(super) last_sync: AtomicU64,
    /// Requests held, over all workers.
    pub(super) held: AtomicI64,
    /// Starts that failed so far; held requests compare it with what they saw.
    pub(super) failed_starts: AtomicU64,
    /// The last call to supervisord could not reach it; set and cleared under the lock, so
    /// that exactly one worker logs each change.
    pub(super) supervisord_unreachable: AtomicBool,
    pub(super) backend_count: usize,
    pub(super) backends: *mut SharedBackend,
}

impl SharedUpstream {
    pub fn backends(&self) -> &[SharedBackend] {
        // SAFETY: allocated with backend_count entries in the zone, never freed.
        unsafe { std::slice::from_raw_parts(self.backends, self.backend_count) }
    }

    pub fn backend(&self, index: usize) -> &SharedBackend {
        &self.backends()[index]
    }

    /// Whether this worker is the one to read supervisord's view now: at most one worker per
    /// interval wins.
    pub fn take_sync_turn(&self, now_ms: u64, interval_ms: u64) -> bool {
        let last = self.last_sync.load(Ordering::Acquire);
        // A little slack so that workers whose timers fire together do not skip a round.
        if now_ms.saturating_sub(last) + interval_ms / 10 < interval_ms {
            return false;
        }
        self.last_sync
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Counts one more held request unless `limit` are held already.
    pub fn try_hold(&self, limit: u64) -> bool {
        let before = self.held.fetch_add(1, Ordering::AcqRel);
        if before >= limit as i64 {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn release_hold(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn held(&self) -> i64 {
        self.held.load(Ordering::Acquire)
    }

    pub fn failed_starts(&self) -> u64 {
        self.failed_starts.load(Ordering::Acquire)
    }

    pub fn supervisord_unreachable(&self) -> bool {
        self.supervisord_unreachable.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn statuses(&self) -> Vec<BackendStatus> {
        self.backends().iter().map(SharedBackend::status).collect()
    }
}
