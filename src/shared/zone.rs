//! The shared memory zone: declared at configuration time with one claim per managed upstream,
//! initialised by nginx before the workers start, found again by each worker through the
//! cycle's list of zones.
//!
//! nginx hands the zone over to the new cycle on `nginx -s reload` when its size is unchanged;
//! an upstream whose identity (name and server lines) is unchanged then keeps its record, so
//! statuses survive the reload.

use std::ffi::c_void;
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8};

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock,
    ngx_shmtx_unlock, ngx_slab_alloc_locked, ngx_slab_pool_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};
use ngx::core::Pool;

use super::lock::SharedRecord;
use super::records::{SharedBackend, SharedUpstream};
use crate::core::backend_status::BackendStatus;

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
}

#[repr(C)]
struct ZoneRoot {
    first: *mut SharedUpstream,
    inits: u64,
}

/// Zone size for the claims. nginx reuses a zone across reloads only when its size is
/// unchanged, so the size moves in whole MiB steps with plenty of room for reloads.
fn zone_size(claims: &[Claim]) -> usize {
    const MIB: usize = 1 << 20;
    let needed: usize = claims
        .iter()
        .map(|claim| 128 + claim.initial_statuses.len() * (size_of::<SharedBackend>() + 16))
        .sum();
    (needed * 8).div_ceil(MIB).max(1) * MIB
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

/// The records of `cycle`'s managed upstreams, in configuration order; none before the zone
/// is initialised or without managed upstreams.
pub fn records(cycle: &ngx_cycle_t, tag: *mut c_void) -> &'static [SharedRecord] {
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
                return registration.records.as_slice();
            }
        }
        // SAFETY: list parts are chained by `next`.
        part = unsafe { (*part).next };
    }
    &[]
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
    unsafe { ngx_shmtx_lock(ptr::addr_of_mut!((*pool).mutex)) };
    // SAFETY: as above, pool is locked.
    let result = unsafe { claim_records(registration, pool, !old_data.is_null()) };
    // SAFETY: locked above.
    unsafe { ngx_shmtx_unlock(ptr::addr_of_mut!((*pool).mutex)) };
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
            root.write(ZoneRoot {
                first: ptr::null_mut(),
                inits: 0,
            });
            (*pool).data = root as *mut c_void;
            root
        }
    };
    // SAFETY: root lives in the locked zone.
    let root = unsafe { &mut *root };
    root.inits += 1;
    registration.records.clear();
    for claim in &registration.claims {
        // SAFETY: the zone is locked.
        let record = unsafe { find_or_create(root, pool, claim)? };
        registration.records.push(SharedRecord { pool, record });
    }
    Ok(())
}

/// # Safety
/// The caller holds the pool's mutex.
unsafe fn find_or_create(
    root: &mut ZoneRoot,
    pool: *mut ngx_slab_pool_t,
    claim: &Claim,
) -> Result<*const SharedUpstream, String> {
    let count = claim.initial_statuses.len();
    let mut record = root.first;
    while !record.is_null() {
        // SAFETY: records form a list in the locked zone.
        let existing = unsafe { &mut *record };
        if existing.identity == claim.identity
            && existing.backend_count == count
            && existing.claimed_in != root.inits
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
                up_since: AtomicU64::new(0),
                program_missing: AtomicBool::new(false),
                known_pid: AtomicI64::new(0),
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
            last_sync: AtomicU64::new(0),
            held: AtomicI64::new(0),
            failed_starts: AtomicU64::new(0),
            supervisord_unreachable: AtomicBool::new(false),
            backend_count: count,
            backends,
        })
    };
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
