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
use crate::core::commands::Decision;
use crate::core::scaling::Sample;
use crate::core::start_backoff::StartBackoff;
use crate::core::start_watch::PendingStart;
use crate::util::time::now_ms;

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

    /// Carries out a command's `decision` for backend `index`: into the command's transitional
    /// status when supervisord is asked (`Some(true)`: the caller sends the call), straight to
    /// its target without supervisord (`Some(false)`); `None` when the decision leaves the
    /// backend as it is.
    pub fn apply(&self, index: usize, decision: Decision, now_ms: u64) -> Option<bool> {
        match decision {
            Decision::Apply {
                status,
                ask_supervisord: true,
            } => {
                self.begin_command(index, status, now_ms);
                Some(true)
            }
            Decision::Apply { status, .. } => {
                self.set_status(index, status);
                Some(false)
            }
            Decision::AlreadyDone | Decision::InProgress | Decision::Conflict => None,
        }
    }

    /// Moves a backend into a transitional status on behalf of a command sent now.
    pub fn begin_command(&self, index: usize, status: BackendStatus, now_ms: u64) {
        self.own_command(index, now_ms);
        self.set_status(index, status);
    }

    /// This worker sends the command in flight again (its worker died, or it waited for
    /// supervisord to answer again); the status stays.
    pub fn take_over_command(&self, index: usize, now_ms: u64) {
        self.own_command(index, now_ms);
    }

    fn own_command(&self, index: usize, now_ms: u64) {
        let backend = self.upstream.backend(index);
        backend.command_started.store(now_ms, Ordering::Relaxed);
        backend.command_owner.store(own_token(), Ordering::Release);
        backend.command_parked.store(false, Ordering::Release);
    }

    /// The command in flight could not reach supervisord: it waits, in its transitional
    /// status, to be sent again once supervisord answers.
    pub fn park_command(&self, index: usize) {
        self.upstream
            .backend(index)
            .command_parked
            .store(true, Ordering::Release);
    }

    /// Records a failed start of `index`; held requests waiting for it give up on the next
    /// generation.
    pub fn record_failed_start(&self, index: usize) {
        self.upstream
            .backend(index)
            .count_event(BackendEvent::StartFailed);
        self.upstream.failed_starts.fetch_add(1, Ordering::AcqRel);
    }

    /// Records whether supervisord can be reached, a change of what was recorded.
    pub fn flip_supervisord_unreachable(&self, unreachable: bool) {
        self.upstream
            .supervisord_unreachable
            .store(unreachable, Ordering::Release);
        self.upstream.reach_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Moves a backend into a transitional status that supervisord reported (a hand action),
    /// not one of nginx's commands: no worker owns it, reconciliation keeps following it.
    pub fn begin_observed_transition(&self, index: usize, status: BackendStatus) {
        self.upstream
            .backend(index)
            .command_started
            .store(0, Ordering::Relaxed);
        self.set_status(index, status);
    }

    /// Records an on-demand start of `index` that failed; returns the backoff it now waits out.
    pub fn record_start_backoff(&self, index: usize, now_ms: u64) -> StartBackoff {
        let backend = self.upstream.backend(index);
        let backoff = backend.start_backoff().after_failure(now_ms);
        backend
            .start_failures
            .store(backoff.failures, Ordering::Release);
        backend
            .last_start_failure
            .store(backoff.last_failure_ms, Ordering::Release);
        backoff
    }

    /// A start of `index` is sent now (`on_demand`: a request found no backend up), or, with
    /// `None`, a stop: a stop ends whatever start was pending.
    pub fn set_pending_start(&self, index: usize, start: Option<PendingStart>) {
        let raw = match start {
            None => PENDING_NONE,
            Some(PendingStart::ByHand) => PENDING_BY_HAND,
            Some(PendingStart::OnDemand) => PENDING_ON_DEMAND,
        };
        self.upstream
            .backend(index)
            .pending_start
            .store(raw, Ordering::Release);
    }

    /// Takes the start of `index` still pending, if any: its caller settles how it ended.
    pub fn take_pending_start(&self, index: usize) -> Option<PendingStart> {
        match self
            .upstream
            .backend(index)
            .pending_start
            .swap(PENDING_NONE, Ordering::AcqRel)
        {
            PENDING_BY_HAND => Some(PendingStart::ByHand),
            PENDING_ON_DEMAND => Some(PendingStart::OnDemand),
            _ => None,
        }
    }

    /// Keeps one load sample (the oldest goes once the ring is full).
    pub fn push_load_sample(&self, sample: Sample) {
        let taken = self.upstream.load_samples_taken.load(Ordering::Acquire) as usize;
        let slot = &self.upstream.load_samples[taken % LOAD_SAMPLES];
        slot.at_ms.store(sample.at_ms, Ordering::Relaxed);
        slot.in_flight.store(sample.in_flight, Ordering::Relaxed);
        slot.requests.store(sample.requests, Ordering::Relaxed);
        slot.up.store(sample.up, Ordering::Relaxed);
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

    /// Records whether supervisord lacks the backend's program; returns what was recorded
    /// before, so that one worker reports each change.
    pub fn swap_program_missing(&self, index: usize, missing: bool) -> bool {
        self.upstream
            .backend(index)
            .program_missing
            .swap(missing, Ordering::AcqRel)
    }

    /// Records the process id supervisord now reports for the backend's program; returns the
    /// one recorded before.
    pub fn swap_known_pid(&self, index: usize, pid: i64) -> i64 {
        self.upstream
            .backend(index)
            .known_pid
            .swap(pid, Ordering::AcqRel)
    }

    pub fn set_status(&self, index: usize, status: BackendStatus) {
        let backend = self.upstream.backend(index);
        let was_up = backend.status() == BackendStatus::Up;
        if status == BackendStatus::Up && !was_up {
            backend.up_count.fetch_add(1, Ordering::AcqRel);
            backend.up_since.store(now_ms(), Ordering::Release);
        }
        if was_up && status != BackendStatus::Up {
            // A backend that stayed up long enough has recovered from its failed starts.
            let up_since = backend.up_since.load(Ordering::Acquire);
            let backoff = backend.start_backoff().after_up(up_since, now_ms());
            backend
                .start_failures
                .store(backoff.failures, Ordering::Release);
        }
        backend.status.store(status as u8, Ordering::Release);
        backend.changes.fetch_add(1, Ordering::AcqRel);
        self.upstream.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The zone's mutex, held until dropped, for work on the zone as a whole (worker slots,
/// reclamation).
pub(super) struct PoolLock(*mut ngx_slab_pool_t);

impl PoolLock {
    /// # Safety
    /// `pool` must be the zone's slab pool.
    pub(super) unsafe fn new(pool: *mut ngx_slab_pool_t) -> Self {
        // SAFETY: the caller's contract.
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
