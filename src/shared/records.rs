//! The records in shared memory: per upstream, per backend status and in-flight count, the
//! same in every worker. Plain atomics, readable without the lock; a status changes only under
//! the zone's lock (see `lock.rs`), which also bumps the upstream's generation.

use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
    Ordering,
};

use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::BackendStatus;
use crate::core::config::server_hosts::MAX_SUPERVISORDS;
use crate::core::policy::scaling::{Sample, SAMPLES_KEPT};
use crate::core::protocol::reply_limit::{next_mark, ReplySize};
use crate::core::render::timings::Timings;
use crate::core::start::start_backoff::StartBackoff;
use crate::core::zone::worker_slots::{locate, MAX_CHUNKS, MAX_WORKER_SLOTS};

/// The own slot of a process that has none (before it claimed one, or when the zone had no
/// room for another chunk): it counts in the records' overflow entries, which are never taken
/// off, and reclamation is turned off (see `slots.rs`).
pub const NO_SLOT: usize = usize::MAX;

/// One worker process, claimed in `init_process`, freed at its exit or, should it die, by
/// whichever worker notices. All fields are written under the zone's lock.
#[repr(C)]
pub struct WorkerSlot {
    /// 0 when free.
    pub(super) pid: AtomicI32,
    /// From `/proc/PID/stat` (0 when unknown): with the pid, names one process for good.
    pub(super) start_time: AtomicU64,
    /// The zone generation (zone init) of the worker's configuration.
    pub(super) generation: AtomicU64,
    /// Unique per claim, never 0: names the owner of a command.
    pub(super) token: AtomicU64,
}

/// The start of the zone (the slab pool's `data`).
#[repr(C)]
pub struct ZoneRoot {
    pub(super) first: *mut SharedUpstream,
    /// Zone inits so far: the current generation.
    pub(super) inits: u64,
    pub(super) next_token: u64,
    /// Workers that found no free slot: with any, records are never freed.
    pub(super) untracked_workers: u64,
    /// A slot was freed since records were last looked at for reclamation.
    pub(super) reclaim_due: AtomicBool,
    /// When a worker last looked for dead workers (one worker per watchdog tick does).
    pub(super) last_worker_check: AtomicU64,
    /// Chunks of slots in use (`core::zone::worker_slots`): slots `0..chunks * SLOTS_PER_CHUNK`
    /// exist, and every record has a block of shares for each of these chunks. Only grows,
    /// under the lock.
    pub(super) chunks: AtomicUsize,
    /// Room for every process nginx may run at once; only the first `chunks` chunks' slots
    /// are used (the rest stay zero and cost nothing until touched).
    pub(super) slots: [WorkerSlot; MAX_WORKER_SLOTS],
}

impl ZoneRoot {
    /// The slots of the chunks in use.
    pub(super) fn slots_in_use(&self) -> &[WorkerSlot] {
        let chunks = self.chunks.load(Ordering::Acquire).min(MAX_CHUNKS);
        &self.slots
            [..(chunks * crate::core::zone::worker_slots::SLOTS_PER_CHUNK).min(MAX_WORKER_SLOTS)]
    }

    /// Whether this worker looks for dead workers now: at most one worker per `tick_ms`, so
    /// the cost of looking does not grow with the square of the number of workers.
    pub(super) fn take_worker_check(&self, now_ms: u64, tick_ms: u64) -> bool {
        let last = self.last_worker_check.load(Ordering::Acquire);
        if now_ms.saturating_sub(last) + tick_ms / 10 < tick_ms {
            return false;
        }
        self.last_worker_check
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// This process's slot (NO_SLOT: the overflow entry, e.g. before it claimed one).
static OWN_SLOT: AtomicUsize = AtomicUsize::new(NO_SLOT);
/// This process's claim token (0 before it claimed a slot).
static OWN_TOKEN: AtomicU64 = AtomicU64::new(0);

pub fn own_slot() -> usize {
    OWN_SLOT.load(Ordering::Relaxed)
}

pub fn own_token() -> u64 {
    OWN_TOKEN.load(Ordering::Relaxed)
}

pub(super) fn set_own_slot(slot: usize, token: u64) {
    OWN_SLOT.store(slot, Ordering::Relaxed);
    OWN_TOKEN.store(token, Ordering::Relaxed);
}

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
    /// Start backoff (`core::start::start_backoff`): consecutive on-demand starts that failed, when
    /// the last one failed, and since when the backend is UP (its failures are forgotten when
    /// it leaves UP after `STABLE_AFTER_MS`). Written under the lock.
    pub(super) start_failures: AtomicU32,
    pub(super) last_start_failure: AtomicU64,
    pub(super) up_since: AtomicU64,
    /// supervisord has no program of this backend's name; reported once until it has.
    pub(super) program_missing: AtomicBool,
    /// The process id of its program at the last read of supervisord (0: not running).
    pub(super) known_pid: AtomicI64,
    /// This nginx started its program (`core::machine::Backend::started_here`).
    pub(super) started_here: AtomicBool,
    // Worker liveness (see `slots.rs`):
    /// Per chunk of worker slots, each slot's share of `in_flight` (a row of
    /// `SLOTS_PER_CHUNK` inside the record's share block of that chunk; null until the zone
    /// has the chunk): a dead worker's share is taken off the total.
    pub(super) share_chunks: [AtomicPtr<AtomicI32>; MAX_CHUNKS],
    /// The share of the workers without a slot (never taken off).
    pub(super) overflow_in_flight: AtomicI32,
    /// The claim token of the worker that sent the command in flight (0: none).
    pub(super) command_owner: AtomicU64,
    /// The command in flight could not reach supervisord; it is sent again once it answers.
    pub(super) command_parked: AtomicBool,
    /// A call of the command in flight was cut off before any answer (`core::machine`).
    pub(super) command_cut: AtomicBool,
    /// A `startProcess` is on its way and nobody settled how it ended (`PENDING_*`): whoever
    /// sees the program exit first (the start's reply, its watch, reconciliation) takes it
    /// and reports the failed start, once.
    pub(super) pending_start: AtomicU8,
    // Load and events (scaling, metrics):
    /// Requests sent to it so far.
    pub(super) requests: AtomicU64,
    /// When its last request ended (nginx's monotonic msec; 0: none yet).
    pub(super) last_request_end: AtomicU64,
    /// Per `BackendEvent`, how many times it happened.
    pub(super) events: [AtomicU64; BackendEvent::COUNT],
    /// Starts that ended UP, from the start command to accepting connections.
    pub(super) ready: SharedTimings,
    /// Cold starts: the first request held while no backend was UP, from its arrival to the
    /// first response header it got from this backend.
    pub(super) cold_start: SharedTimings,
}

pub(super) const PENDING_NONE: u8 = 0;
pub(super) const PENDING_BY_HAND: u8 = 1;
pub(super) const PENDING_ON_DEMAND: u8 = 2;

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
    /// supervisord has no program of its name, as far as the module knows.
    pub fn program_missing(&self) -> bool {
        self.program_missing.load(Ordering::Acquire)
    }

    /// This nginx started its program: only then is it stopped for idleness or light load.
    pub fn started_here(&self) -> bool {
        self.started_here.load(Ordering::Acquire)
    }

    pub fn start_backoff(&self) -> StartBackoff {
        StartBackoff {
            failures: self.start_failures.load(Ordering::Acquire),
            last_failure_ms: self.last_start_failure.load(Ordering::Acquire),
        }
    }

    /// Ordered before the caller's next read of the status (see the balancer's `get_peer`).
    pub fn request_started(&self) {
        self.slot_share(own_slot()).fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A request the balancer handed it, and that it keeps (see `request_started`).
    pub fn request_sent(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.slot_share(own_slot()).fetch_sub(1, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request it served ended at `now_ms` (for the idle rule).
    pub fn note_request_end(&self, now_ms: u64) {
        self.last_request_end.store(now_ms, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// When it last came UP (0: never).
    pub fn up_since(&self) -> u64 {
        self.up_since.load(Ordering::Acquire)
    }

    /// Since when it has had no request: its last one's end, or its coming UP if later.
    pub fn idle_since(&self) -> u64 {
        self.last_request_end
            .load(Ordering::Relaxed)
            .max(self.up_since.load(Ordering::Acquire))
    }

    pub fn count_event(&self, event: BackendEvent) {
        self.events[event.slot()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn events(&self, event: BackendEvent) -> u64 {
        self.events[event.slot()].load(Ordering::Relaxed)
    }

    /// Starts that ended UP, from the start command to accepting connections.
    pub fn ready(&self) -> &SharedTimings {
        &self.ready
    }

    /// Cold starts: a first held request's arrival to its first response header from here.
    pub fn cold_start(&self) -> &SharedTimings {
        &self.cold_start
    }

    pub fn command_owner(&self) -> u64 {
        self.command_owner.load(Ordering::Acquire)
    }

    pub fn command_parked(&self) -> bool {
        self.command_parked.load(Ordering::Acquire)
    }

    pub(super) fn slot_share(&self, slot: usize) -> &AtomicI32 {
        let (chunk, offset) = locate(slot);
        let Some(row) = self.share_chunks.get(chunk) else {
            return &self.overflow_in_flight;
        };
        let row = row.load(Ordering::Acquire);
        if row.is_null() {
            return &self.overflow_in_flight;
        }
        // SAFETY: a non-null row has SLOTS_PER_CHUNK entries in the zone (`zone::add_shares`)
        // and lives as long as the record; `offset` is below SLOTS_PER_CHUNK.
        unsafe { &*row.add(offset) }
    }
}

#[repr(C)]
pub struct SharedUpstream {
    pub(super) next: *mut SharedUpstream,
    pub(super) identity: u64,
    /// The reload (zone init) that last claimed this record; a record is claimed once per init.
    pub(super) claimed_in: u64,
    pub(super) generation: AtomicU64,
    /// Per `supervisord` line, what belongs to its supervisord (used in the record of the
    /// line that leads the host: `core::config::supervisord_host`).
    pub(super) hosts: [HostRecord; MAX_SUPERVISORDS],
    /// Requests held, over all workers.
    pub(super) held: AtomicI64,
    /// Starts that failed so far; held requests compare it with what they saw.
    pub(super) failed_starts: AtomicU64,
    pub(super) backend_count: usize,
    pub(super) backends: *mut SharedBackend,
    // Worker liveness and reloads (see `slots.rs`, `zone.rs`):
    /// Per chunk of worker slots, each slot's share of `held`: the start of the record's
    /// share block of that chunk (null until the zone has the chunk).
    pub(super) held_chunks: [AtomicPtr<AtomicI64>; MAX_CHUNKS],
    /// The share of the workers without a slot (never taken off).
    pub(super) overflow_held: AtomicI64,
    // Scaling (see `core::policy::scaling`):
    /// When the last scaling tick ran (one worker per tick wins it).
    pub(super) last_scale_tick: AtomicU64,
    /// When the last load action (start or stop for load) was taken.
    pub(super) last_scale_action: AtomicU64,
    /// The last `LOAD_SAMPLES` load samples, a ring written under the lock: `load_samples_taken`
    /// counts them all, the newest is at `(taken - 1) % LOAD_SAMPLES`.
    pub(super) load_samples: [LoadSampleSlot; LOAD_SAMPLES],
    pub(super) load_samples_taken: AtomicU64,
    /// Holds that ended so far.
    pub(super) holds: SharedTimings,
    // The C API (see `core::policy::balancer_api`):
    /// When a balancer's last "any" command went ahead.
    pub(super) last_balancer_any_command: AtomicU64,
    /// When the load monitor was last told (one worker per interval wins it; 0: never), and
    /// the upstream's request count then.
    pub(super) last_load_report: AtomicU64,
    pub(super) load_report_requests: AtomicU64,
}

/// What belongs to one supervisord rather than to an upstream: shared by every upstream (and
/// `supervisord` line) that names it, kept in the record of the line that leads its host.
#[repr(C)]
#[derive(Default)]
pub struct HostRecord {
    /// When supervisord's view was last read by any worker (nginx's monotonic msec).
    pub(super) last_sync: AtomicU64,
    /// The last call to supervisord could not reach it; set and cleared under the lock, so
    /// that exactly one worker logs each change.
    pub(super) supervisord_unreachable: AtomicBool,
    /// How many times `supervisord_unreachable` flipped: a call's verdict counts only when it
    /// did not flip since the call began.
    pub(super) reach_epoch: AtomicU64,
    /// The newest zone generation whose workers read supervisord's view once at start.
    pub(super) first_read_generation: AtomicU64,
    /// While supervisord is unreachable: when a worker last asked whether it is back.
    pub(super) last_reach_attempt: AtomicU64,
    /// The call whose reply was last reported over `supervisord_max_reply_size`
    /// (`core::protocol::reply_limit::method_mark`; 0: none).
    pub(super) oversized_reply: AtomicU64,
    /// supervisord answered a call at least once (since the record was made).
    pub(super) answered: AtomicBool,
}

/// `core::render::timings::Timings` counted in the shared zone by every worker.
#[repr(C)]
#[derive(Default)]
pub struct SharedTimings {
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl SharedTimings {
    /// One more that took `took_ms`.
    pub fn note(&self, took_ms: u64) {
        self.sum_ms.fetch_add(took_ms, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn load(&self) -> Timings {
        Timings {
            count: self.count.load(Ordering::Relaxed),
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }
}

/// Room for two windows of samples (`core::policy::scaling::SAMPLES_KEPT`).
pub const LOAD_SAMPLES: usize = SAMPLES_KEPT;

#[repr(C)]
#[derive(Default)]
pub struct LoadSampleSlot {
    pub(super) at_ms: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) held: AtomicU64,
}

impl SharedUpstream {
    /// The host facts of `supervisord` line `line` (meaningful in the lead's record).
    pub fn host(&self, line: usize) -> &HostRecord {
        &self.hosts[line.min(MAX_SUPERVISORDS - 1)]
    }

    pub fn backends(&self) -> &[SharedBackend] {
        // SAFETY: allocated with backend_count entries in the zone, freed only once no worker
        // uses the record (`zone::reclaim_locked`).
        unsafe { std::slice::from_raw_parts(self.backends, self.backend_count) }
    }

    pub fn backend(&self, index: usize) -> &SharedBackend {
        &self.backends()[index]
    }

    /// Counts one more held request unless `limit` are held already.
    /// Counts one more request held, within `limit`: `None` when there is no room, otherwise
    /// whether it is the first (no request of the upstream was held in any worker).
    pub fn try_hold(&self, limit: u64) -> Option<bool> {
        let before = self.held.fetch_add(1, Ordering::AcqRel);
        if before >= limit as i64 {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.slot_held(own_slot()).fetch_add(1, Ordering::AcqRel);
        Some(before <= 0)
    }

    pub fn release_hold(&self) {
        self.slot_held(own_slot()).fetch_sub(1, Ordering::AcqRel);
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn slot_held(&self, slot: usize) -> &AtomicI64 {
        let (chunk, offset) = locate(slot);
        let Some(row) = self.held_chunks.get(chunk) else {
            return &self.overflow_held;
        };
        let row = row.load(Ordering::Acquire);
        if row.is_null() {
            return &self.overflow_held;
        }
        // SAFETY: a non-null row has SLOTS_PER_CHUNK entries in the zone (`zone::add_shares`)
        // and lives as long as the record; `offset` is below SLOTS_PER_CHUNK.
        unsafe { &*row.add(offset) }
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

    /// Whether this worker takes the scaling tick now: at most one worker per `tick_ms`.
    pub fn take_scale_tick(&self, now_ms: u64, tick_ms: u64) -> bool {
        let last = self.last_scale_tick.load(Ordering::Acquire);
        if now_ms.saturating_sub(last) + tick_ms / 10 < tick_ms {
            return false;
        }
        self.last_scale_tick
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether this worker tells the load monitor now: at most one worker per `interval_ms`.
    /// Returns when it was last told (0: never, nothing to tell yet) and the request count of
    /// then, and records `now_ms` and `requests` for the next report.
    pub fn take_load_report(
        &self,
        now_ms: u64,
        interval_ms: u64,
        requests: u64,
    ) -> Option<(u64, u64)> {
        let last = self.last_load_report.load(Ordering::Acquire);
        if last != 0 && now_ms.saturating_sub(last) + interval_ms / 10 < interval_ms {
            return None;
        }
        self.last_load_report
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        if last == 0 {
            // The first turn starts the first interval; the requests so far (from 0, when the
            // record was made) count in it.
            return Some((0, 0));
        }
        let requests_then = self.load_report_requests.swap(requests, Ordering::AcqRel);
        Some((last, requests_then))
    }

    /// When a balancer's last "any" command went ahead (0: never).
    pub fn last_balancer_any_command(&self) -> u64 {
        self.last_balancer_any_command.load(Ordering::Acquire)
    }

    pub fn last_scale_action(&self) -> u64 {
        self.last_scale_action.load(Ordering::Acquire)
    }

    /// The load samples kept, oldest first.
    pub fn load_samples(&self) -> Vec<Sample> {
        let taken = self.load_samples_taken.load(Ordering::Acquire) as usize;
        let kept = taken.min(LOAD_SAMPLES);
        (taken - kept..taken)
            .map(|n| {
                let slot = &self.load_samples[n % LOAD_SAMPLES];
                Sample {
                    at_ms: slot.at_ms.load(Ordering::Relaxed),
                    in_flight: slot.in_flight.load(Ordering::Relaxed),
                    requests: slot.requests.load(Ordering::Relaxed),
                    held: slot.held.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Holds that ended so far (each request held, then let go).
    pub fn holds(&self) -> &SharedTimings {
        &self.holds
    }
}

impl HostRecord {
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

    /// Whether this worker, of zone generation `generation`, reads supervisord's view for its
    /// generation's first time (one worker per generation wins).
    pub fn take_first_read(&self, generation: u64, now_ms: u64) -> bool {
        let seen = self.first_read_generation.load(Ordering::Acquire);
        if seen >= generation {
            return false;
        }
        let won = self
            .first_read_generation
            .compare_exchange(seen, generation, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.last_sync.store(now_ms, Ordering::Release);
        }
        won
    }

    /// Marks a read of supervisord's view that did not wait for its turn (supervisord answers
    /// again): the next turn is a whole interval away.
    pub fn note_sync(&self, now_ms: u64) {
        self.last_sync.store(now_ms, Ordering::Release);
    }

    /// While supervisord is unreachable: whether this worker asks now whether it is back (at
    /// most one worker per `interval_ms` and upstream).
    pub fn take_reach_attempt(&self, now_ms: u64, interval_ms: u64) -> bool {
        let last = self.last_reach_attempt.load(Ordering::Acquire);
        if now_ms.saturating_sub(last) < interval_ms {
            return false;
        }
        self.last_reach_attempt
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// supervisord answered a call at least once.
    pub fn ever_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// A call got an answer from supervisord.
    pub fn note_answered(&self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Release);
        }
    }

    pub fn supervisord_unreachable(&self) -> bool {
        self.supervisord_unreachable.load(Ordering::Acquire)
    }

    pub fn reach_epoch(&self) -> u64 {
        self.reach_epoch.load(Ordering::Acquire)
    }

    /// Notes how a reply of the call marked `method` compared with the size limit; true when
    /// this worker is the one to report it over the limit (once for all workers, until a
    /// reply of that call fits again; `core::protocol::reply_limit`).
    pub fn note_reply_size(&self, method: u64, size: ReplySize) -> bool {
        let mut mark = self.oversized_reply.load(Ordering::Acquire);
        loop {
            let (next, report) = next_mark(mark, method, size);
            if next == mark {
                return report;
            }
            match self.oversized_reply.compare_exchange(
                mark,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return report,
                Err(now) => mark = now,
            }
        }
    }
}
