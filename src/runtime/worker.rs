//! The worker's runtime: per managed upstream, its shared record and everything this process
//! alone keeps (its kept-alive supervisord connection, held requests, timers, what its peer
//! list last reflected). Built once per worker in `init_process` and freed with the cycle's
//! pool when the worker exits; the timers and connections it holds are gone by then.

use std::cell::{Cell, UnsafeCell};
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use nginx_sys::{
    ngx_add_timer, ngx_cycle_t, ngx_del_timer, ngx_event_t, ngx_log_t, ngx_pool_cleanup_add,
    ngx_post_event, ngx_posted_events, NGX_LOG_ALERT, NGX_LOG_DEBUG,
};

use super::backend_runtime::BackendRuntime;
use super::hold_queue::HoldQueue;
use super::line_runtime::LineRuntime;
use super::monitor_state::BackendMonitorState;
use crate::conf::UpstreamConf;
use crate::core::machine::Action;
use crate::shared::records::SharedUpstream;
use crate::shared::{SharedRecord, ZoneLock};
use crate::util::log::cycle_log;

pub struct UpstreamRuntime {
    pub conf: &'static UpstreamConf,
    record: SharedRecord,
    /// Per `supervisord` line, what this worker keeps of its supervisord (`runtime::host`).
    pub lines: Box<[LineRuntime]>,
    /// Requests this worker holds until a backend is up.
    pub held: HoldQueue,
    /// While requests are held: watches the shared generation for them.
    pub wake_timer: UnsafeCell<ngx_event_t>,
    pub wake_seen_generation: Cell<u64>,
    /// Takes the scaling tick (`supervisord::scaler`).
    pub scale_timer: UnsafeCell<ngx_event_t>,
    /// The shared generation this worker's peer list last reflected.
    pub synced_generation: Cell<u64>,
    /// Per backend, what this worker keeps of it.
    pub backends: Box<[BackendRuntime]>,
    /// The C balancer's backend monitor: what it was last told (`runtime::backend_monitor`).
    pub monitor: BackendMonitorState,
    /// Takes the turn to tell the C balancer's load monitor (`api::load_monitor`).
    pub load_timer: UnsafeCell<ngx_event_t>,
}

impl UpstreamRuntime {
    fn new(conf: &'static UpstreamConf, record: SharedRecord) -> Self {
        Self {
            conf,
            record,
            lines: (0..conf.lines.len())
                .map(|line| LineRuntime::new(conf.index, line))
                .collect(),
            held: HoldQueue::new(),
            // SAFETY: zeroed is a valid unset event.
            wake_timer: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            wake_seen_generation: Cell::new(0),
            // SAFETY: zeroed is a valid unset event.
            scale_timer: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            synced_generation: Cell::new(0),
            backends: conf
                .backends
                .iter()
                .map(|_| BackendRuntime::new())
                .collect(),
            monitor: BackendMonitorState::new(),
            // SAFETY: zeroed is a valid unset event.
            load_timer: UnsafeCell::new(unsafe { std::mem::zeroed() }),
        }
    }

    /// Re-evaluates the requests this worker holds for the upstream in this turn of the event
    /// loop instead of at the next wake tick (the readiness probe saw a backend come up).
    pub fn wake_held_now(&self) {
        let event = self.wake_timer.get();
        // SAFETY: the event lives in the worker's runtime and only this worker's thread touches
        // it; an armed wake timer has its handler set, and posted events run later in this
        // turn of the event loop, after the caller returned.
        unsafe {
            if (*event).timer_set() == 0 {
                return;
            }
            ngx_del_timer(event);
            ngx_post_event(event, std::ptr::addr_of_mut!(ngx_posted_events));
        }
    }

    /// Carries out an effect of a state machine's step for backend `index` that stays within
    /// this runtime and the shared zone (counts, cold-start time, held requests); false for
    /// one that is the caller's (a command, a probe, a read, a line).
    pub fn carry_out_local(&self, index: usize, action: &Action) -> bool {
        let backend = self.shared().backend(index);
        match *action {
            Action::Count(event) => backend.count_event(event),
            Action::Ready { took_ms } => backend.ready().note(took_ms),
            Action::WakeHeld => self.wake_held_now(),
            _ => return false,
        }
        true
    }

    /// As `wake_held_now`, even when no status changed (a failure check left its backend UP:
    /// requests held again for it go on).
    pub fn reevaluate_held_now(&self) {
        // Generations start at 1: the next tick takes this for a change.
        self.wake_seen_generation.set(0);
        self.wake_held_now();
    }

    /// Arms `event`, one of this runtime's timers, to call `handler` after `after_ms`;
    /// `handler` finds the runtime again with `UpstreamRuntime::of_timer`. A cancelable timer
    /// does not keep a gracefully exiting worker alive. Arming a set timer moves it.
    pub fn arm_timer(
        &'static self,
        event: *mut ngx_event_t,
        handler: unsafe extern "C" fn(*mut ngx_event_t),
        after_ms: u64,
        cancelable: bool,
    ) {
        // SAFETY: the event lives in this runtime, which outlives its timers; only this
        // worker's thread touches it.
        unsafe {
            (*event).handler = Some(handler);
            (*event).data = self as *const UpstreamRuntime as *mut c_void;
            (*event).log = cycle_log();
            (*event).set_cancelable(cancelable.into());
            ngx_add_timer(event, after_ms as _);
        }
    }

    /// The runtime whose timer `event` is (see `arm_timer`).
    ///
    /// # Safety
    /// `event` must be a timer armed with `arm_timer`.
    pub unsafe fn of_timer(event: *mut ngx_event_t) -> &'static UpstreamRuntime {
        // SAFETY: `arm_timer` armed `event` (this fn's contract) with its UpstreamRuntime as data,
        // inside the worker's runtime, which lives until the worker exits.
        unsafe { &*((*event).data as *const UpstreamRuntime) }
    }

    pub fn shared(&self) -> &SharedUpstream {
        self.record.get()
    }

    pub fn lock(&self) -> ZoneLock<'_> {
        self.record.lock()
    }

    pub fn record(&self) -> SharedRecord {
        self.record
    }

    pub fn name(&self) -> &str {
        &self.conf.name
    }
}

struct Worker {
    upstreams: Box<[UpstreamRuntime]>,
    /// The cycle's log, for connections whose failures the module reports itself.
    quiet_log: UnsafeCell<ngx_log_t>,
    // Liveness and reloads:
    /// The zone generation of this worker's configuration.
    generation: u64,
    /// Every few hundred ms: frees what dead workers left, takes over their commands, asks an
    /// unreachable supervisord whether it is back (`supervisord::watchdog`).
    watchdog_timer: UnsafeCell<ngx_event_t>,
}

/// A copy of `log` that drops nginx's own `[crit]`/`[error]` lines, such as the
/// `connect() ... failed` that `ngx_event_connect_peer` writes for every refused attempt: the
/// readiness probe expects refusals, and the supervisord client logs one line per outage. With
/// `error_log ... debug` the copy is left as verbose as the original.
fn quiet_copy(log: &ngx_log_t) -> ngx_log_t {
    let mut quiet = *log;
    if quiet.log_level <= NGX_LOG_DEBUG as usize {
        quiet.log_level = quiet.log_level.min(NGX_LOG_ALERT as usize);
    }
    quiet
}

static WORKER: AtomicPtr<Worker> = AtomicPtr::new(ptr::null_mut());

/// Builds this worker's runtime: one entry per managed upstream, paired with its shared record.
///
/// # Safety
/// `cycle` must be the worker's running cycle, from `init_process`.
pub unsafe fn install(
    cycle: *mut ngx_cycle_t,
    upstreams: impl Iterator<Item = &'static UpstreamConf>,
    records: &[SharedRecord],
    generation: u64,
) -> Result<(), &'static str> {
    let upstreams: Box<[UpstreamRuntime]> = upstreams
        .zip(records.iter().copied())
        .map(|(conf, record)| UpstreamRuntime::new(conf, record))
        .collect();
    if upstreams.len() != records.len() {
        return Err("the shared zone does not match the configuration");
    }
    // SAFETY: the cycle's pool lives until the worker exits.
    let cleanup = unsafe { ngx_pool_cleanup_add((*cycle).pool, 0) };
    if cleanup.is_null() {
        return Err("out of memory");
    }
    // SAFETY: the cycle's log is set up before init_process.
    let quiet_log = UnsafeCell::new(quiet_copy(unsafe { &*(*cycle).log }));
    let worker = Box::into_raw(Box::new(Worker {
        upstreams,
        quiet_log,
        generation,
        // SAFETY: zeroed is a valid unset event.
        watchdog_timer: UnsafeCell::new(unsafe { std::mem::zeroed() }),
    }));
    WORKER.store(worker, Ordering::Release);
    // SAFETY: the cleanup entry belongs to the cycle's pool.
    unsafe {
        (*cleanup).handler = Some(free_worker);
        (*cleanup).data = worker as *mut c_void;
    }
    Ok(())
}

unsafe extern "C" fn free_worker(data: *mut c_void) {
    let worker = data as *mut Worker;
    let _ = WORKER.compare_exchange(worker, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire);
    // SAFETY: `install` leaked this box and registered this cleanup once.
    drop(unsafe { Box::from_raw(worker) });
}

/// The runtime of managed upstream `index` (its `UpstreamConf::index`) in this worker; none
/// outside a worker (e.g. `nginx -t`, the master).
pub fn upstream(index: usize) -> Option<&'static UpstreamRuntime> {
    let worker = WORKER.load(Ordering::Acquire);
    // SAFETY: set by `install`, freed only when the worker exits, after its last event.
    unsafe { worker.as_ref() }?.upstreams.get(index)
}

/// Every managed upstream's runtime in this worker.
pub fn upstreams() -> &'static [UpstreamRuntime] {
    let worker = WORKER.load(Ordering::Acquire);
    // SAFETY: null, or the box `install` leaked, freed by the cycle pool's cleanup only as the
    // worker exits, after its last event.
    unsafe { worker.as_ref() }
        .map(|worker| &*worker.upstreams)
        .unwrap_or(&[])
}

/// The worker's quiet log (see `quiet_copy`) for peer connections whose failures the module
/// reports itself; the cycle's log outside a worker.
pub fn quiet_log() -> *mut ngx_log_t {
    let worker = WORKER.load(Ordering::Acquire);
    // SAFETY: null, or the box `install` leaked, freed by the cycle pool's cleanup only as the
    // worker exits, after its last event.
    match unsafe { worker.as_ref() } {
        Some(worker) => worker.quiet_log.get(),
        None => ngx::log::ngx_cycle_log().as_ptr(),
    }
}

/// The zone generation of this worker's configuration (0 outside a worker).
pub fn generation() -> u64 {
    let worker = WORKER.load(Ordering::Acquire);
    // SAFETY: null, or the box `install` leaked, freed by the cycle pool's cleanup only as the
    // worker exits, after its last event.
    unsafe { worker.as_ref() }.map_or(0, |worker| worker.generation)
}

/// The worker's watchdog timer event; none outside a worker.
pub fn watchdog_timer() -> Option<*mut ngx_event_t> {
    let worker = WORKER.load(Ordering::Acquire);
    // SAFETY: null, or the box `install` leaked, freed by the cycle pool's cleanup only as the
    // worker exits, after its last event.
    unsafe { worker.as_ref() }.map(|worker| worker.watchdog_timer.get())
}
