//! The shared memory zone: per upstream, per backend status and in-flight count, the same in
//! every worker. A status change takes the zone's mutex and bumps the upstream's generation.
//!
//! nginx hands the zone over to the new cycle on `nginx -s reload` when its size is unchanged;
//! an upstream whose identity (name and server lines) is unchanged then keeps its record, so
//! statuses survive the reload.

use std::ffi::c_void;
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

use nginx_sys::{
    ngx_int_t, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_alloc_locked,
    ngx_slab_pool_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};

use crate::conf::{MainConf, UpstreamConf};
use crate::core::backend_status::BackendStatus;

#[repr(C)]
pub struct SharedBackend {
    status: AtomicU8,
    in_flight: AtomicI64,
    /// When the command now in flight began (nginx's monotonic msec), to spot orphans.
    command_started: AtomicU64,
    /// How many times the backend became UP; workers reset their balancer's failure count
    /// for it when this moves.
    up_count: AtomicU64,
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

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[repr(C)]
pub struct SharedUpstream {
    next: *mut SharedUpstream,
    identity: u64,
    /// The reload (zone init) that last claimed this record; a record is claimed once per init.
    claimed_in: u64,
    generation: AtomicU64,
    /// When supervisord's view was last read by any worker (nginx's monotonic msec).
    last_sync: AtomicU64,
    /// Requests held, over all workers.
    held: AtomicI64,
    /// Starts that failed so far; held requests compare it with what they saw.
    failed_starts: AtomicU64,
    backend_count: usize,
    backends: *mut SharedBackend,
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

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn statuses(&self) -> Vec<BackendStatus> {
        self.backends().iter().map(SharedBackend::status).collect()
    }
}

#[repr(C)]
struct ZoneRoot {
    first: *mut SharedUpstream,
    inits: u64,
}

/// Holds the zone's mutex; statuses change only through it.
pub struct ZoneLock<'a> {
    pool: *mut ngx_slab_pool_t,
    upstream: &'a SharedUpstream,
}

impl<'a> ZoneLock<'a> {
    pub fn new(conf: &'a UpstreamConf) -> Self {
        let (pool, upstream) = (conf.zone_pool, conf.shared());
        // SAFETY: the slab pool's mutex is set up by nginx for every zone; zone_pool is set
        // together with `shared` in init_zone.
        unsafe { ngx_shmtx_lock(ptr::addr_of_mut!((*pool).mutex)) };
        Self { pool, upstream }
    }

    /// Moves a backend into a transitional status on behalf of a command sent now.
    pub fn begin_command(&self, index: usize, status: BackendStatus, now_ms: u64) {
        self.upstream
            .backend(index)
            .command_started
            .store(now_ms, Ordering::Relaxed);
        self.set_status(index, status);
    }

    pub fn status(&self, index: usize) -> BackendStatus {
        self.upstream.backend(index).status()
    }

    /// Records a failed start; held requests waiting for it give up on the next generation.
    pub fn record_failed_start(&self) {
        self.upstream.failed_starts.fetch_add(1, Ordering::AcqRel);
    }

    pub fn set_status(&self, index: usize, status: BackendStatus) {
        let backend = self.upstream.backend(index);
        if status == BackendStatus::Up && backend.status() != BackendStatus::Up {
            backend.up_count.fetch_add(1, Ordering::AcqRel);
        }
        backend.status.store(status as u8, Ordering::Release);
        self.upstream.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for ZoneLock<'_> {
    fn drop(&mut self) {
        // SAFETY: locked in `new`.
        unsafe { ngx_shmtx_unlock(ptr::addr_of_mut!((*self.pool).mutex)) };
    }
}

/// Zone size for the configured upstreams. nginx reuses a zone across reloads only when its
/// size is unchanged, so the size moves in whole MiB steps with plenty of room for reloads.
pub fn zone_size(backend_counts: impl Iterator<Item = usize>) -> usize {
    const MIB: usize = 1 << 20;
    let needed: usize = backend_counts
        .map(|count| 128 + count * (size_of::<SharedBackend>() + 16))
        .sum();
    (needed * 8).div_ceil(MIB).max(1) * MIB
}

/// `ngx_shm_zone_t.init`: `old_data` is non-null when nginx hands over the previous cycle's zone.
pub unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old_data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this with the zone it created from our ngx_shared_memory_add, whose
    // data is this cycle's MainConf; the zone memory starts with nginx's slab pool.
    let (main, pool) = unsafe {
        (
            &mut *((*zone).data as *mut MainConf),
            (*zone).shm.addr as *mut ngx_slab_pool_t,
        )
    };
    // SAFETY: pool is the zone's slab pool; locking guards against old workers still running.
    unsafe { ngx_shmtx_lock(ptr::addr_of_mut!((*pool).mutex)) };
    // SAFETY: as above, pool is locked.
    let result = unsafe { claim_records(main, pool, !old_data.is_null()) };
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

unsafe fn claim_records(
    main: &mut MainConf,
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
    for &upstream in &main.upstreams {
        // SAFETY: collected in postconfiguration from this cycle's srv confs.
        let upstream = unsafe { &mut *upstream };
        // SAFETY: the zone is locked.
        upstream.shared = unsafe { find_or_create(root, pool, upstream)? };
        upstream.zone_pool = pool;
    }
    Ok(())
}

unsafe fn find_or_create(
    root: &mut ZoneRoot,
    pool: *mut ngx_slab_pool_t,
    upstream: &UpstreamConf,
) -> Result<*const SharedUpstream, String> {
    let mut record = root.first;
    while !record.is_null() {
        // SAFETY: records form a list in the locked zone.
        let existing = unsafe { &mut *record };
        if existing.identity == upstream.identity
            && existing.backend_count == upstream.backends.len()
            && existing.claimed_in != root.inits
        {
            existing.claimed_in = root.inits;
            return Ok(record);
        }
        record = existing.next;
    }
    let count = upstream.backends.len();
    // SAFETY: the zone is locked.
    let (record, backends) = unsafe {
        (
            allocate::<SharedUpstream>(pool, 1)?,
            allocate::<SharedBackend>(pool, count)?,
        )
    };
    for (index, backend) in upstream.backends.iter().enumerate() {
        // SAFETY: `backends` has room for `count` entries.
        unsafe {
            backends.add(index).write(SharedBackend {
                status: AtomicU8::new(backend.initial_status as u8),
                in_flight: AtomicI64::new(0),
                command_started: AtomicU64::new(0),
                up_count: AtomicU64::new(0),
            })
        };
    }
    // SAFETY: freshly allocated.
    unsafe {
        record.write(SharedUpstream {
            next: root.first,
            identity: upstream.identity,
            claimed_in: root.inits,
            generation: AtomicU64::new(1),
            last_sync: AtomicU64::new(0),
            held: AtomicI64::new(0),
            failed_starts: AtomicU64::new(0),
            backend_count: count,
            backends,
        })
    };
    root.first = record;
    Ok(record)
}

unsafe fn allocate<T>(pool: *mut ngx_slab_pool_t, count: usize) -> Result<*mut T, String> {
    let size = (size_of::<T>() * count).max(align_of::<T>());
    // SAFETY: the caller holds the pool's mutex.
    let memory = unsafe { ngx_slab_alloc_locked(pool, size) } as *mut T;
    if memory.is_null() {
        return Err("shared zone \"ngx_supervisord\" is full; restart nginx to rebuild it".into());
    }
    Ok(memory)
}
