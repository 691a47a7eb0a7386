//! One upstream's record together with the zone's lock: statuses change only under the lock,
//! and every change bumps the upstream's generation (which workers watch) and the backend's
//! change count.

use std::ptr;
use std::sync::atomic::Ordering;

use nginx_sys::{ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_pool_t};

use super::records::{
    own_token, SharedUpstream, LOAD_SAMPLES, PENDING_BY_HAND, PENDING_NONE, PENDING_ON_DEMAND,
};
use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::BackendStatus;
use crate::core::machine::{transition, At, Backend, CommandHolder, Event, Step};
use crate::core::policy::scaling::Sample;
use crate::core::start::start_watch::PendingStart;

/// Where one upstream's record lives: valid from zone init for as long as the zone, which
/// outlives every cycle that points into it.
#[derive(Clone, Copy)]
pub struct SharedRecord {
    pub(super) pool: *mut ngx_slab_pool_t,
    pub(super) record: *const SharedUpstream,
}

impl SharedRecord {
    pub fn get(&self) -> &SharedUpstream {
        // SAFETY: see the type's contract.
        unsafe { &*self.record }
    }

    pub fn lock(&self) -> ZoneLock<'_> {
        // SAFETY: the slab pool's mutex is set up by nginx for every zone.
        unsafe { ngx_shmtx_lock(ptr::addr_of_mut!((*self.pool).mutex)) };
        ZoneLock {
            pool: self.pool,
            upstream: self.get(),
        }
    }
}

/// Holds the zone's mutex until dropped.
pub struct ZoneLock<'a> {
    pool: *mut ngx_slab_pool_t,
    upstream: &'a SharedUpstream,
}

impl ZoneLock<'_> {
    pub fn statuses(&self) -> Vec<BackendStatus> {
        self.upstream.statuses()
    }

    pub fn status(&self, index: usize) -> BackendStatus {
        self.upstream.backend(index).status()
    }

    /// Hands `event` to the backend state machine (`core::machine`) for backend `index` and
    /// stores the record it returns; the caller carries out the step's actions once it has
    /// dropped the lock.
    pub fn step(&self, index: usize, event: &Event, now_ms: u64) -> Step {
        let before = self.record(index);
        let step = transition(
            &before,
            event,
            At {
                now_ms,
                me: own_token(),
            },
        );
        self.store(index, &before, &step.next);
        step
    }

    /// Backend `index` as the state machine sees it.
    pub fn record(&self, index: usize) -> Backend {
        let backend = self.upstream.backend(index);
        Backend {
            status: backend.status(),
            command: CommandHolder {
                owner: backend.command_owner.load(Ordering::Acquire),
                began_ms: backend.command_started.load(Ordering::Relaxed),
                parked: backend.command_parked.load(Ordering::Acquire),
                cut: backend.command_cut.load(Ordering::Acquire),
            },
            pending_start: match backend.pending_start.load(Ordering::Acquire) {
                PENDING_BY_HAND => Some(PendingStart::ByHand),
                PENDING_ON_DEMAND => Some(PendingStart::OnDemand),
                _ => None,
            },
            backoff: backend.start_backoff(),
            up_since_ms: backend.up_since.load(Ordering::Acquire),
            program_missing: backend.program_missing(),
            known_pid: backend.known_pid.load(Ordering::Acquire),
            failed_starts: backend.events(BackendEvent::StartFailed),
            started_here: backend.started_here(),
            changes: backend.changes(),
        }
    }

    /// Writes what the state machine changed; a new status is published last, with the
    /// upstream's generation that wakes the workers watching it.
    fn store(&self, index: usize, before: &Backend, next: &Backend) {
        let backend = self.upstream.backend(index);
        if next.command != before.command {
            backend
                .command_started
                .store(next.command.began_ms, Ordering::Relaxed);
            backend
                .command_owner
                .store(next.command.owner, Ordering::Release);
            backend
                .command_parked
                .store(next.command.parked, Ordering::Release);
            backend
                .command_cut
                .store(next.command.cut, Ordering::Release);
        }
        let pending = match next.pending_start {
            None => PENDING_NONE,
            Some(PendingStart::ByHand) => PENDING_BY_HAND,
            Some(PendingStart::OnDemand) => PENDING_ON_DEMAND,
        };
        backend.pending_start.store(pending, Ordering::Release);
        backend
            .start_failures
            .store(next.backoff.failures, Ordering::Release);
        backend
            .last_start_failure
            .store(next.backoff.last_failure_ms, Ordering::Release);
        backend
            .program_missing
            .store(next.program_missing, Ordering::Release);
        backend.known_pid.store(next.known_pid, Ordering::Release);
        backend
            .started_here
            .store(next.started_here, Ordering::Release);
        let failed = next.failed_starts.saturating_sub(before.failed_starts);
        if failed > 0 {
            backend.events[BackendEvent::StartFailed.slot()].fetch_add(failed, Ordering::Relaxed);
            // Held requests compare it with what they saw when the generation moves.
            self.upstream
                .failed_starts
                .fetch_add(failed, Ordering::AcqRel);
        }
        if next.changes == before.changes {
            return;
        }
        backend.up_since.store(next.up_since_ms, Ordering::Release);
        if next.status == BackendStatus::Up && before.status != BackendStatus::Up {
            backend.up_count.fetch_add(1, Ordering::AcqRel);
        }
        backend.status.store(next.status as u8, Ordering::Release);
        backend
            .changes
            .fetch_add(next.changes - before.changes, Ordering::AcqRel);
        self.upstream.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Records whether the supervisord of line `line` (this record leads its host) can be
    /// reached, a change of what was recorded.
    pub fn flip_supervisord_unreachable(&self, line: usize, unreachable: bool) {
        let host = self.upstream.host(line);
        host.supervisord_unreachable
            .store(unreachable, Ordering::Release);
        host.reach_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Keeps one load sample (the oldest goes once the ring is full).
    pub fn push_load_sample(&self, sample: Sample) {
        let taken = self.upstream.load_samples_taken.load(Ordering::Acquire) as usize;
        let slot = &self.upstream.load_samples[taken % LOAD_SAMPLES];
        slot.at_ms.store(sample.at_ms, Ordering::Relaxed);
        slot.in_flight.store(sample.in_flight, Ordering::Relaxed);
        slot.requests.store(sample.requests, Ordering::Relaxed);
        slot.held.store(sample.held, Ordering::Relaxed);
        self.upstream
            .load_samples_taken
            .store(taken as u64 + 1, Ordering::Release);
    }

    /// A balancer's "any" command goes ahead now.
    pub fn note_balancer_any_command(&self, now_ms: u64) {
        self.upstream
            .last_balancer_any_command
            .store(now_ms, Ordering::Release);
    }

    /// A load action (start or stop for load) is taken now.
    pub fn note_scale_action(&self, now_ms: u64) {
        self.upstream
            .last_scale_action
            .store(now_ms, Ordering::Release);
    }
}

/// The zone's mutex, held until dropped, for work on the zone as a whole (worker slots,
/// reclamation).
pub(super) struct PoolLock(*mut ngx_slab_pool_t);

impl PoolLock {
    /// # Safety
    /// `pool` must be the zone's slab pool.
    pub(super) unsafe fn new(pool: *mut ngx_slab_pool_t) -> Self {
        // SAFETY: `pool` is the zone's slab pool (this fn's contract); nginx made its mutex in
        // ngx_init_zone_pool, before any zone init or worker runs.
        unsafe { ngx_shmtx_lock(ptr::addr_of_mut!((*pool).mutex)) };
        Self(pool)
    }
}

impl Drop for PoolLock {
    fn drop(&mut self) {
        // SAFETY: locked in `PoolLock::new`.
        unsafe { ngx_shmtx_unlock(ptr::addr_of_mut!((*self.0).mutex)) };
    }
}

impl Drop for ZoneLock<'_> {
    fn drop(&mut self) {
        // SAFETY: locked in `SharedRecord::lock`.
        unsafe { ngx_shmtx_unlock(ptr::addr_of_mut!((*self.pool).mutex)) };
    }
}
