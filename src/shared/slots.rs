//! Worker slots: each worker claims one in the zone when it starts and counts its held
//! requests and requests in flight there as well as in the totals. A worker that dies without
//! freeing its slot (`kill -9`, a crash) is noticed by the others' watchdog within a tick: its
//! shares are taken off the totals and its slot is freed, and records only its configuration
//! used can be reclaimed (see `zone.rs`).
//!
//! The zone has a slot for every worker alive at once, whatever `worker_processes` says and
//! old generations included: slots come in chunks that the zone adds as workers need them
//! (`core::zone::worker_slots`), up to nginx's own limit on the processes of one master.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use nginx_sys::{ngx_slab_pool_t, NGX_LOG_NOTICE};

use super::lock::PoolLock;
use super::process;
use super::records::{own_slot, own_token, set_own_slot, SharedUpstream, ZoneRoot, NO_SLOT};
use super::zone::{add_shares, free_shares, reclaim_locked};
use crate::core::zone::worker_slots::{choose_slot, locate, SlotChoice};
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// This process's zone, once it claimed a slot.
static OWN_POOL: AtomicPtr<ngx_slab_pool_t> = AtomicPtr::new(ptr::null_mut());

/// # Safety
/// `pool` is the zone's slab pool, whose root `zone.rs` set up at zone init.
unsafe fn root<'a>(pool: *mut ngx_slab_pool_t) -> &'a mut ZoneRoot {
    // SAFETY: `pool` is the zone's slab pool (this fn's contract); zone init
    // (`zone::claim_records`) set its `data` to the ZoneRoot, which lives as long as the zone.
    unsafe { &mut *((*pool).data as *mut ZoneRoot) }
}

/// What claiming a slot found.
pub enum Claimed {
    Slot,
    /// The zone had no room for another chunk of slots: this worker counts in the overflow
    /// entry and records are never freed.
    Untracked,
}

/// Claims a slot for this worker of zone generation `generation`.
///
/// # Safety
/// `pool` is the zone's slab pool (from `zone::find`), in `init_process`.
pub unsafe fn claim(pool: *mut ngx_slab_pool_t, generation: u64) -> Claimed {
    let (pid, start_time) = process::own_identity();
    // SAFETY: `pool` is the zone's slab pool, from `zone::find` (this fn's contract).
    let _lock = unsafe { PoolLock::new(pool) };
    // SAFETY: the same pool, its root set up at zone init; the lock taken above keeps other
    // workers from writing the root while `root` is used.
    let root = unsafe { root(pool) };
    // A free slot, else one whose worker died unnoticed (freed first), else a new chunk.
    let chunks = root.chunks.load(Ordering::Acquire);
    let choice = choose_slot(
        chunks,
        |slot| root.slots[slot].pid.load(Ordering::Acquire) == 0,
        |slot| {
            let holder = &root.slots[slot];
            !process::alive(
                holder.pid.load(Ordering::Acquire),
                holder.start_time.load(Ordering::Acquire),
            )
        },
    );
    let index = match choice {
        SlotChoice::Free(index) => index,
        SlotChoice::Reap(index) => {
            let dead_pid = root.slots[index].pid.load(Ordering::Acquire);
            // SAFETY: the zone is locked.
            let (held, in_flight) = unsafe { reap_locked(root, index) };
            report(&DeadWorker {
                pid: dead_pid,
                held,
                in_flight,
            });
            index
        }
        // SAFETY: the zone is locked; `index` starts chunk `chunks`, which no record has yet.
        SlotChoice::Grow(index) if unsafe { grow_locked(root, pool, chunks) } => index,
        SlotChoice::Grow(_) | SlotChoice::None => {
            root.untracked_workers += 1;
            OWN_POOL.store(pool, Ordering::Release);
            return Claimed::Untracked;
        }
    };
    root.next_token += 1;
    let slot = &root.slots[index];
    slot.pid.store(pid, Ordering::Release);
    slot.start_time.store(start_time, Ordering::Release);
    slot.generation.store(generation, Ordering::Release);
    slot.token.store(root.next_token, Ordering::Release);
    set_own_slot(index, root.next_token);
    OWN_POOL.store(pool, Ordering::Release);
    Claimed::Slot
}

/// Frees this worker's slot as it exits (what it still counts, nothing normally, is taken off).
pub fn release() {
    let pool = OWN_POOL.swap(ptr::null_mut(), Ordering::AcqRel);
    let index = own_slot();
    if pool.is_null() || index == NO_SLOT {
        return;
    }
    // SAFETY: the pool was stored by `claim`; the zone outlives every worker.
    let _lock = unsafe { PoolLock::new(pool) };
    // SAFETY: the pool `claim` stored, its root set up at zone init; locked just above.
    let root = unsafe { root(pool) };
    if root.slots[index].token.load(Ordering::Acquire) == own_token() {
        // SAFETY: locked.
        unsafe { reap_locked(root, index) };
    }
    set_own_slot(NO_SLOT, 0);
}

/// Adds chunk `chunk` of slots to the zone: a block of shares in every record. False when the
/// zone is full (what was added for the chunk is freed again).
///
/// # Safety
/// The caller holds the pool's mutex; `chunk` is the zone's chunk count.
unsafe fn grow_locked(root: &mut ZoneRoot, pool: *mut ngx_slab_pool_t, chunk: usize) -> bool {
    let mut record = root.first;
    while !record.is_null() {
        // SAFETY: records form a list in the locked zone.
        let upstream: &SharedUpstream = unsafe { &*record };
        // SAFETY: locked; no record has a block for the new chunk yet.
        if unsafe { add_shares(pool, upstream, chunk) }.is_err() {
            let mut added = root.first;
            while added != record {
                // SAFETY: the pool is locked (this fn's contract); `added`, a listed record,
                // got this chunk's block above, and no worker has a slot of the chunk yet.
                unsafe {
                    free_shares(pool, &*added, chunk);
                    added = (*added).next;
                }
            }
            return false;
        }
        record = upstream.next;
    }
    // After every block is in place: only then may a slot of the chunk be handed out.
    root.chunks.store(chunk + 1, Ordering::Release);
    true
}

/// A worker found dead and what it still counted.
pub struct DeadWorker {
    pub pid: i32,
    pub held: i64,
    pub in_flight: i64,
}

/// Logs what a dead worker left behind, once per worker (by whichever worker freed its slot).
pub fn report(dead: &DeadWorker) {
    ngx::ngx_log_error!(
        NGX_LOG_NOTICE,
        cycle_log(),
        "supervisord: worker process {} is gone; the {} held requests and {} requests in flight it counted no longer count",
        dead.pid,
        dead.held,
        dead.in_flight
    );
}

/// The watchdog's look at the slots, every `tick_ms`: frees those of dead workers (taking their
/// shares off), then reclaims unused records if a slot was freed since the last look. One
/// worker per tick looks at the processes (however many workers there are); any worker
/// reclaims when due. Takes the lock only when something is to be done.
pub fn check_workers(tick_ms: u64) -> (Vec<DeadWorker>, usize) {
    let pool = OWN_POOL.load(Ordering::Acquire);
    if pool.is_null() {
        return (Vec::new(), 0);
    }
    // SAFETY: the pool was stored by `claim`; slots are atomics, read without the lock.
    let root_view = unsafe { root(pool) };
    let mine = own_slot();
    let looks = root_view.take_worker_check(now_ms(), tick_ms);
    let dead: Vec<(usize, u64)> = root_view
        .slots_in_use()
        .iter()
        .enumerate()
        .filter(|&(index, slot)| {
            let pid = slot.pid.load(Ordering::Acquire);
            looks
                && index != mine
                && pid != 0
                && !process::alive(pid, slot.start_time.load(Ordering::Acquire))
        })
        .map(|(index, slot)| (index, slot.token.load(Ordering::Acquire)))
        .collect();
    if dead.is_empty() && !root_view.reclaim_due.load(Ordering::Acquire) {
        return (Vec::new(), 0);
    }
    // SAFETY: the zone's pool, stored by `claim` (non-null, checked above); the zone outlives
    // every worker.
    let _lock = unsafe { PoolLock::new(pool) };
    // SAFETY: locked.
    let root = unsafe { root(pool) };
    let mut found = Vec::new();
    for (index, token) in dead {
        // Another worker may have freed (and someone claimed) it meanwhile.
        if root.slots[index].token.load(Ordering::Acquire) != token {
            continue;
        }
        let pid = root.slots[index].pid.load(Ordering::Acquire);
        // SAFETY: locked.
        let (held, in_flight) = unsafe { reap_locked(root, index) };
        found.push(DeadWorker {
            pid,
            held,
            in_flight,
        });
    }
    let reclaimed = if root.reclaim_due.load(Ordering::Acquire) {
        // SAFETY: locked.
        unsafe { reclaim_locked(root, pool) }
    } else {
        0
    };
    (found, reclaimed)
}

/// The claim tokens of the workers holding a slot now (dead ones included until reaped: a
/// command is taken over only once its owner's slot is freed).
pub fn live_tokens() -> Vec<u64> {
    let pool = OWN_POOL.load(Ordering::Acquire);
    if pool.is_null() {
        return Vec::new();
    }
    // SAFETY: the pool was stored by `claim`; slots are atomics.
    let root = unsafe { root(pool) };
    root.slots_in_use()
        .iter()
        .filter(|slot| slot.pid.load(Ordering::Acquire) != 0)
        .map(|slot| slot.token.load(Ordering::Acquire))
        .collect()
}

/// Takes slot `index`'s shares off every record's totals and frees it; its held requests and
/// requests in flight over all records.
///
/// # Safety
/// The caller holds the pool's mutex; the slot's worker is gone (or is this one, exiting).
unsafe fn reap_locked(root: &mut ZoneRoot, index: usize) -> (i64, i64) {
    let (mut held, mut in_flight) = (0, 0);
    debug_assert!(locate(index).0 < root.chunks.load(Ordering::Acquire));
    let mut record = root.first;
    while !record.is_null() {
        // SAFETY: records form a list in the locked zone.
        let upstream: &SharedUpstream = unsafe { &*record };
        let share = upstream.slot_held(index).swap(0, Ordering::AcqRel);
        upstream.held.fetch_sub(share, Ordering::AcqRel);
        held += share;
        for backend in upstream.backends() {
            let share = i64::from(backend.slot_share(index).swap(0, Ordering::AcqRel));
            backend.in_flight.fetch_sub(share, Ordering::AcqRel);
            in_flight += share;
        }
        record = upstream.next;
    }
    let slot = &root.slots[index];
    slot.pid.store(0, Ordering::Release);
    slot.token.store(0, Ordering::Release);
    root.reclaim_due.store(true, Ordering::Release);
    (held, in_flight)
}
