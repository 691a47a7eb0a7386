//! The shared memory zone: declared at configuration time with one claim per managed upstream,
//! initialised by nginx before the workers start, found again by each worker through the
//! cycle's list of zones.
//!
//! nginx hands the zone over to the new cycle on `nginx -s reload` when its size is unchanged;
//! an upstream whose identity (name and server lines) is unchanged then keeps its record, so
//! statuses survive the reload. Each zone init is a generation; records no live worker uses
//! any more are freed (`core::zone::reclaim` decides), at zone init and by the workers' watchdog.

use std::ffi::c_void;
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering,
};

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t,
    ngx_slab_alloc_locked, ngx_slab_free_locked, ngx_slab_pool_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};
use ngx::core::Pool;

use super::lock::{PoolLock, SharedRecord};
use super::process;
use super::records::{SharedBackend, SharedTimings, SharedUpstream, ZoneRoot, PENDING_NONE};
use crate::core::backend_status::BackendStatus;
use crate::core::machine::NEVER_READ;
use crate::core::zone::reclaim::{record_reusable, record_unused};
use crate::core::zone::worker_slots::{
    max_share_bytes, share_block_size, MAX_CHUNKS, SLOTS_PER_CHUNK,
};
use crate::util::time::now_ms;

const ZONE_NAME: &[u8] = b"ngx_supervisord";

/// What one managed upstream asks of the zone.
pub struct Claim {
    /// Name and server lines: a record survives a reload only for the same identity.
    pub identity: u64,
    /// The status each backend starts in when its record is created.
    pub initial_statuses: Vec<BackendStatus>,
}

/// The zone's `data`: the claims of this cycle's upstreams and, once the zone is initialised,
/// their records, in the same order.
struct Registration {
    claims: Vec<Claim>,
    records: Vec<SharedRecord>,
    /// The zone generation this cycle's init made.
    generation: u64,
    pool: *mut ngx_slab_pool_t,
}

/// What a worker needs of the zone: its cycle's records, the generation its configuration
/// belongs to, and the zone's pool (for the worker slots).
pub struct ZoneView {
    pub records: &'static [SharedRecord],
    pub generation: u64,
    pub pool: *mut ngx_slab_pool_t,
}

/// Shared bytes of one record with `backends` backends, with room for the shares of every
/// worker slot nginx may need (`core::zone::worker_slots`): they are allocated chunk by chunk as
/// workers claim slots, so most of that room is never touched.
fn record_size(backends: usize) -> usize {
    size_of::<SharedUpstream>() + backends * size_of::<SharedBackend>() + max_share_bytes(backends)
}

/// Zone size for the claims. nginx reuses a zone across reloads only when its size is
/// unchanged, so the size moves in whole MiB steps with plenty of room for reloads, and it
/// does not depend on `worker_processes`: a reload that changes the number of workers keeps
/// the zone (and every status and counter in it).
fn zone_size(claims: &[Claim]) -> usize {
    const MIB: usize = 1 << 20;
    let needed: usize = claims
        .iter()
        .map(|claim| 128 + record_size(claim.initial_statuses.len()))
        .sum();
    // Room for the records of a few configurations alive at once (old workers finish their
    // requests after a reload) and for the slab allocator's rounding.
    (size_of::<ZoneRoot>() + needed * 8).div_ceil(MIB).max(1) * MIB
}

/// Declares the zone for this cycle's managed upstreams. `tag` tells nginx (and `records`)
/// that the zone is this module's.
///
/// # Safety
/// `cf` must be the http block's configuration, in postconfiguration.
pub unsafe fn register(
    cf: *mut ngx_conf_t,
    tag: *mut c_void,
    claims: Vec<Claim>,
) -> Result<(), ()> {
    let mut name = nginx_sys::ngx_str_t {
        len: ZONE_NAME.len(),
        data: ZONE_NAME.as_ptr() as *mut u8,
    };
    let size = zone_size(&claims);
    // SAFETY: cf is the configuration being built; name and tag outlive the call.
    let zone = unsafe { ngx_shared_memory_add(cf, &mut name, size, tag) };
    if zone.is_null() {
        return Err(());
    }
    // SAFETY: the cycle's pool outlives the zone's use by this cycle; allocate drops the
    // registration with the pool.
    let registration = unsafe { Pool::from_ngx_pool((*cf).pool) }.allocate(Registration {
        claims,
        records: Vec::new(),
        generation: 0,
        pool: ptr::null_mut(),
    });
    if registration.is_null() {
        return Err(());
    }
    // SAFETY: ngx_shared_memory_add returned a zone entry of this cycle.
    unsafe {
        (*zone).init = Some(init_zone);
        (*zone).data = registration as *mut c_void;
    }
    Ok(())
}

/// The zone as `cycle` sees it: its managed upstreams' records in configuration order; none
/// before the zone is initialised or without managed upstreams.
pub fn find(cycle: &ngx_cycle_t, tag: *mut c_void) -> Option<ZoneView> {
    let mut part: *const nginx_sys::ngx_list_part_t = &cycle.shared_memory.part;
    while !part.is_null() {
        // SAFETY: the cycle's shared_memory list holds ngx_shm_zone_t entries.
        let zones = unsafe {
            std::slice::from_raw_parts((*part).elts as *const ngx_shm_zone_t, (*part).nelts)
        };
        for zone in zones {
            if zone.tag == tag && !zone.data.is_null() {
                // SAFETY: a zone with our tag was declared by `register`; its registration
                // lives in the cycle's pool.
                let registration = unsafe { &*(zone.data as *const Registration) };
                if registration.pool.is_null() {
                    return None;
                }
                return Some(ZoneView {
                    records: registration.records.as_slice(),
                    generation: registration.generation,
                    pool: registration.pool,
                });
            }
        }
        // SAFETY: list parts are chained by `next`.
        part = unsafe { (*part).next };
    }
    None
}

/// `ngx_shm_zone_t.init`: `old_data` is non-null when nginx hands over the previous cycle's zone.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old_data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this with the zone declared by `register`, whose data is this
    // cycle's registration; the zone memory starts with nginx's slab pool.
    let (registration, pool) = unsafe {
        (
            &mut *((*zone).data as *mut Registration),
            (*zone).shm.addr as *mut ngx_slab_pool_t,
        )
    };
    // SAFETY: pool is the zone's slab pool; locking guards against old workers still running.
    let lock = unsafe { PoolLock::new(pool) };
    // SAFETY: `lock` holds the pool's mutex, as claim_records requires, until it is dropped.
    let result = unsafe { claim_records(registration, pool, !old_data.is_null()) };
    drop(lock);
    match result {
        Ok(()) => NGX_OK as ngx_int_t,
        Err(message) => {
            // SAFETY: zone and its shm log are valid during init.
            let log = unsafe { (*zone).shm.log };
            ngx::ngx_log_error!(NGX_LOG_EMERG, log, "supervisord: {}", message);
            NGX_ERROR as ngx_int_t
        }
    }
}

/// # Safety
/// The caller holds the pool's mutex.
unsafe fn claim_records(
    registration: &mut Registration,
    pool: *mut ngx_slab_pool_t,
    reused: bool,
) -> Result<(), String> {
    // SAFETY: the caller holds the pool's mutex.
    let root = unsafe {
        let existing = (*pool).data as *mut ZoneRoot;
        if reused && !existing.is_null() {
            existing
        } else {
            let root = allocate::<ZoneRoot>(pool, 1)?;
            // All zero: no records, no generation yet, every slot free (atomics of zero).
            ptr::write_bytes(root, 0, 1);
            (*pool).data = root as *mut c_void;
            root
        }
    };
    // SAFETY: root lives in the locked zone.
    let root = unsafe { &mut *root };
    // What no live worker uses goes first, so that a reload reuses only maintained records.
    // SAFETY: the zone is locked.
    unsafe { reclaim_locked(root, pool) };
    let newest_live = live_generations(root).into_iter().max();
    root.inits += 1;
    registration.generation = root.inits;
    registration.pool = pool;
    registration.records.clear();
    for claim in &registration.claims {
        // SAFETY: the zone is locked.
        let record = unsafe { find_or_create(root, pool, claim, newest_live)? };
        registration.records.push(SharedRecord { pool, record });
    }
    Ok(())
}

/// The generations of the workers alive now (slots whose process still runs).
fn live_generations(root: &ZoneRoot) -> Vec<u64> {
    root.slots_in_use()
        .iter()
        .filter(|slot| {
            let pid = slot.pid.load(Ordering::Acquire);
            pid != 0 && process::alive(pid, slot.start_time.load(Ordering::Acquire))
        })
        .map(|slot| slot.generation.load(Ordering::Acquire))
        .collect()
}

/// Frees the records no live worker uses; how many were freed.
///
/// # Safety
/// The caller holds the pool's mutex; `root` is the zone's root.
pub(super) unsafe fn reclaim_locked(root: &mut ZoneRoot, pool: *mut ngx_slab_pool_t) -> usize {
    root.reclaim_due.store(false, Ordering::Release);
    let live = live_generations(root);
    let untracked = root.untracked_workers > 0;
    let mut freed = 0;
    let mut link: *mut *mut SharedUpstream = &mut root.first;
    // SAFETY: records form a list in the locked zone; a freed record is unlinked first.
    unsafe {
        while !(*link).is_null() {
            let record = *link;
            if record_unused((*record).claimed_in, root.inits, &live, untracked) {
                *link = (*record).next;
                free_record(pool, record);
                freed += 1;
            } else {
                link = &mut (*record).next;
            }
        }
    }
    freed
}

/// # Safety
/// The caller holds the pool's mutex; `record` is unlinked and no worker uses it.
unsafe fn free_record(pool: *mut ngx_slab_pool_t, record: *mut SharedUpstream) {
    // SAFETY: every part was allocated from this pool by `find_or_create` and `add_shares`.
    unsafe {
        for chunk in 0..MAX_CHUNKS {
            free_shares(pool, &*record, chunk);
        }
        ngx_slab_free_locked(pool, (*record).backends as *mut c_void);
        ngx_slab_free_locked(pool, record as *mut c_void);
    }
}

/// Gives `record` its block of shares for the worker slots of chunk `chunk`: one zeroed block,
/// the held counts per slot first, then each backend's row of in-flight counts.
///
/// # Safety
/// The caller holds the pool's mutex; `record` lives in the zone and has no block for `chunk`.
pub(super) unsafe fn add_shares(
    pool: *mut ngx_slab_pool_t,
    record: &SharedUpstream,
    chunk: usize,
) -> Result<(), String> {
    let count = record.backend_count;
    // SAFETY: the caller holds the pool's mutex. The held counts (8 bytes each) come first,
    // so the in-flight rows after them stay aligned for their 4-byte atomics.
    let block = unsafe { allocate_zeroed::<u8>(pool, share_block_size(count))? };
    let held = block as *mut AtomicI64;
    // SAFETY: `held` has SLOTS_PER_CHUNK entries; the rows follow inside the block.
    let rows = unsafe { held.add(SLOTS_PER_CHUNK) } as *mut AtomicI32;
    for (index, backend) in record.backends().iter().enumerate() {
        // SAFETY: `count` rows of SLOTS_PER_CHUNK after the held counts, within the block.
        let row = unsafe { rows.add(index * SLOTS_PER_CHUNK) };
        backend.share_chunks[chunk].store(row, Ordering::Release);
    }
    // Last: a non-null `held_chunks` entry says the whole block is in place.
    record.held_chunks[chunk].store(held, Ordering::Release);
    Ok(())
}

/// Frees `record`'s block of shares for chunk `chunk`, if it has one.
///
/// # Safety
/// The caller holds the pool's mutex; no worker counts in that block any more (the record is
/// unused, or the chunk was never handed to a worker).
pub(super) unsafe fn free_shares(
    pool: *mut ngx_slab_pool_t,
    record: &SharedUpstream,
    chunk: usize,
) {
    let held = record.held_chunks[chunk].swap(ptr::null_mut(), Ordering::AcqRel);
    if held.is_null() {
        return;
    }
    for backend in record.backends() {
        backend.share_chunks[chunk].store(ptr::null_mut(), Ordering::Release);
    }
    // SAFETY: the block starts with the held counts (`add_shares`).
    unsafe { ngx_slab_free_locked(pool, held as *mut c_void) };
}

/// # Safety
/// The caller holds the pool's mutex.
unsafe fn find_or_create(
    root: &mut ZoneRoot,
    pool: *mut ngx_slab_pool_t,
    claim: &Claim,
    newest_live_generation: Option<u64>,
) -> Result<*const SharedUpstream, String> {
    let count = claim.initial_statuses.len();
    let mut record = root.first;
    while !record.is_null() {
        // SAFETY: records form a list in the locked zone.
        let existing = unsafe { &mut *record };
        if existing.identity == claim.identity
            && existing.backend_count == count
            && existing.claimed_in != root.inits
            && record_reusable(existing.claimed_in, newest_live_generation)
        {
            existing.claimed_in = root.inits;
            return Ok(record);
        }
        record = existing.next;
    }
    // SAFETY: the zone is locked.
    let (record, backends) = unsafe {
        (
            allocate::<SharedUpstream>(pool, 1)?,
            allocate::<SharedBackend>(pool, count)?,
        )
    };
    for (index, status) in claim.initial_statuses.iter().enumerate() {
        // SAFETY: `backends` has room for `count` entries.
        unsafe {
            backends.add(index).write(SharedBackend {
                status: AtomicU8::new(*status as u8),
                in_flight: AtomicI64::new(0),
                command_started: AtomicU64::new(0),
                up_count: AtomicU64::new(0),
                changes: AtomicU64::new(0),
                start_failures: AtomicU32::new(0),
                last_start_failure: AtomicU64::new(0),
                // A backend UP from the start (inherited status) is not idle since 0.
                up_since: AtomicU64::new(if *status == BackendStatus::Up {
                    now_ms()
                } else {
                    0
                }),
                program_missing: AtomicBool::new(false),
                known_pid: AtomicI64::new(NEVER_READ),
                // `supervisord_inherit_backend_status` declares them nginx's own, as 1.4 did.
                started_here: AtomicBool::new(*status == BackendStatus::Up),
                share_chunks: Default::default(),
                overflow_in_flight: AtomicI32::new(0),
                command_owner: AtomicU64::new(0),
                command_parked: AtomicBool::new(false),
                command_cut: AtomicBool::new(false),
                pending_start: AtomicU8::new(PENDING_NONE),
                requests: AtomicU64::new(0),
                last_request_end: AtomicU64::new(0),
                events: Default::default(),
                ready: SharedTimings::default(),
                cold_start: SharedTimings::default(),
            })
        };
    }
    // SAFETY: freshly allocated.
    unsafe {
        record.write(SharedUpstream {
            next: root.first,
            identity: claim.identity,
            claimed_in: root.inits,
            generation: AtomicU64::new(1),
            hosts: Default::default(),
            held: AtomicI64::new(0),
            failed_starts: AtomicU64::new(0),
            backend_count: count,
            backends,
            held_chunks: Default::default(),
            overflow_held: AtomicI64::new(0),
            last_scale_tick: AtomicU64::new(0),
            last_scale_action: AtomicU64::new(0),
            load_samples: Default::default(),
            load_samples_taken: AtomicU64::new(0),
            holds: SharedTimings::default(),
            last_balancer_any_command: AtomicU64::new(0),
            last_load_report: AtomicU64::new(0),
            load_report_requests: AtomicU64::new(0),
        })
    };
    // Shares for the slots the workers alive now may hold (workers of this configuration
    // claim theirs later, growing the zone as they need; `slots::claim`).
    for chunk in 0..root.chunks.load(Ordering::Acquire) {
        // SAFETY: the zone is locked; the record is new, with no block yet.
        if let Err(full) = unsafe { add_shares(pool, &*record, chunk) } {
            // SAFETY: the zone is locked; unlinked and unused, every part from this pool.
            unsafe { free_record(pool, record) };
            return Err(full);
        }
    }
    root.first = record;
    Ok(record)
}

/// # Safety
/// The caller holds the pool's mutex.
unsafe fn allocate<T>(pool: *mut ngx_slab_pool_t, count: usize) -> Result<*mut T, String> {
    let size = (size_of::<T>() * count).max(align_of::<T>());
    // SAFETY: the caller holds the pool's mutex.
    let memory = unsafe { ngx_slab_alloc_locked(pool, size) } as *mut T;
    if memory.is_null() {
        return Err("shared zone \"ngx_supervisord\" is full; restart nginx to rebuild it".into());
    }
    Ok(memory)
}

/// `count` zeroed entries (a valid value for atomics).
///
/// # Safety
/// The caller holds the pool's mutex.
unsafe fn allocate_zeroed<T>(pool: *mut ngx_slab_pool_t, count: usize) -> Result<*mut T, String> {
    // SAFETY: the caller holds the pool's mutex.
    let memory = unsafe { allocate::<T>(pool, count)? };
    // SAFETY: freshly allocated with room for `count` entries.
    unsafe { ptr::write_bytes(memory, 0, count) };
    Ok(memory)
}
