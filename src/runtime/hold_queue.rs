//! The requests a worker holds for one upstream: an intrusive `ngx_queue_t` of records that
//! live in each request's pool, so that holding, releasing and timing out are O(1) and waking
//! is O(held).

use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};

use nginx_sys::{
    ngx_event_t, ngx_http_request_t, ngx_queue_add, ngx_queue_empty, ngx_queue_init,
    ngx_queue_insert_before, ngx_queue_remove, ngx_queue_t,
};

use crate::conf::UpstreamConf;
use crate::shared::SharedRecord;

/// The request's module context, allocated in its pool: a request held (or one that may be),
/// and what the log variables show of it (made by the balancer too, for `$supervisord_backend`).
#[repr(C)]
pub struct HeldRequest {
    /// First, so that a queue link is also a pointer to its record.
    link: ngx_queue_t,
    pub request: *mut ngx_http_request_t,
    pub upstream: &'static UpstreamConf,
    /// Where the request is counted as held.
    pub shared: SharedRecord,
    /// The upstream's failed-start count when the request began waiting.
    pub failures_seen: u64,
    /// How many times it was held again after its backend failed it (`core::hold::refused_attempt`).
    pub times_held_again: u32,
    /// Held again while a failure check of this backend runs: it waits for the check's
    /// outcome even while the backend still shows UP.
    pub awaiting_check: Option<usize>,
    /// In the queue (and counted as held in the shared zone).
    queued: bool,
    /// When its current hold began (nginx's monotonic msec).
    pub hold_began_ms: u64,
    /// Holds that ended, and the milliseconds they lasted in total (`$supervisord_hold_time`).
    pub holds_ended: u32,
    pub held_ms: u64,
    /// The backend the balancer last picked for it (`$supervisord_backend`).
    pub backend: Option<usize>,
    /// The first request held while no request of its upstream was (in any worker): when its
    /// hold began, until it gets its first response header from a backend (the cold start).
    pub cold_start_from_ms: Option<u64>,
    /// Held by its balancer's peer.init (nginx patched with init_busy), not by the gate: it
    /// goes on, or is answered, through the patch's resume.
    pub paused_in_peer_init: bool,
    /// The hold deadline of a request paused in peer.init (a request held by the gate uses its
    /// connection's write event; a subrequest, which shares its connection, cannot).
    pub deadline: ngx_event_t,
}

impl HeldRequest {
    pub fn new(
        request: *mut ngx_http_request_t,
        upstream: &'static UpstreamConf,
        shared: SharedRecord,
    ) -> Self {
        Self {
            // SAFETY: zeroed is an unlinked queue entry.
            link: unsafe { std::mem::zeroed() },
            request,
            upstream,
            shared,
            failures_seen: 0,
            times_held_again: 0,
            awaiting_check: None,
            queued: false,
            hold_began_ms: 0,
            holds_ended: 0,
            held_ms: 0,
            backend: None,
            cold_start_from_ms: None,
            paused_in_peer_init: false,
            // SAFETY: zeroed is a valid unset event.
            deadline: unsafe { std::mem::zeroed() },
        }
    }

    /// Whether it is held now (queued, counted as held).
    pub fn is_held(&self) -> bool {
        self.queued
    }

    /// How long it was held in all by `now_ms`, its current hold included; `None` if it never
    /// was.
    pub fn held_ms_by(&self, now_ms: u64) -> Option<u64> {
        let current = self
            .queued
            .then(|| now_ms.saturating_sub(self.hold_began_ms));
        if self.holds_ended == 0 && current.is_none() {
            return None;
        }
        Some(self.held_ms + current.unwrap_or(0))
    }

    /// Its hold ends at `now_ms` (resumed, answered, or its client left): it is no longer
    /// counted as held, and the time it was held counts in the upstream's hold figures. Call it
    /// once per hold, with the request out of its queue.
    pub fn let_go(&mut self, now_ms: u64) {
        debug_assert!(!self.queued);
        let held_for = now_ms.saturating_sub(self.hold_began_ms);
        self.holds_ended += 1;
        self.held_ms += held_for;
        let shared = self.shared.get();
        shared.release_hold();
        shared.holds().note(held_for);
    }
}

/// The head of a worker's queue of held requests for one upstream. Lives in the worker's
/// runtime, whose address never changes.
pub struct HoldQueue {
    head: UnsafeCell<ngx_queue_t>,
}

impl HoldQueue {
    pub fn new() -> Self {
        Self {
            // SAFETY: zeroed marks a head not initialised yet (see `head`).
            head: UnsafeCell::new(unsafe { std::mem::zeroed() }),
        }
    }

    fn head(&self) -> *mut ngx_queue_t {
        let head = self.head.get();
        // SAFETY: the head is only touched from the worker's thread; it is initialised in
        // place on first use, once it sits at its final address.
        unsafe {
            if (*head).prev.is_null() {
                ngx_queue_init(head);
            }
        }
        head
    }

    pub fn is_empty(&self) -> bool {
        // SAFETY: an initialised head.
        unsafe { ngx_queue_empty(self.head()) }
    }

    /// Queues `held`, which must live until it is removed (its request's pool cleanup does).
    pub fn push(&self, held: &mut HeldRequest) {
        debug_assert!(!held.queued);
        // SAFETY: both are valid; the entry is not in any queue.
        unsafe { ngx_queue_insert_before(self.head(), &mut held.link) };
        held.queued = true;
    }

    /// Takes `held` out of whichever queue it is in; false when it was in none.
    pub fn remove(held: &mut HeldRequest) -> bool {
        if !held.queued {
            return false;
        }
        // SAFETY: a queued entry is linked between valid neighbours.
        unsafe { ngx_queue_remove(&mut held.link) };
        held.queued = false;
        true
    }

    /// Moves every held request into `batch`, leaving this queue empty.
    pub fn drain_into(&self, batch: &mut Batch) {
        let head = self.head();
        // SAFETY: both heads are initialised; ngx_queue_add splices all entries over.
        unsafe {
            if !ngx_queue_empty(head) {
                ngx_queue_add(batch.head(), head);
                ngx_queue_init(head);
            }
        }
    }
}

impl Default for HoldQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// A temporary queue of held requests being looked at (see `HoldQueue::drain_into`); entries
/// stay queued, so a request freed meanwhile still unlinks itself.
pub struct Batch {
    head: ngx_queue_t,
}

impl Batch {
    /// # Safety
    /// The batch must not move while it holds entries (keep it in a local variable).
    pub unsafe fn new() -> Self {
        Self {
            // SAFETY: zeroed marks a head not initialised yet.
            head: unsafe { std::mem::zeroed() },
        }
    }

    fn head(&mut self) -> *mut ngx_queue_t {
        let head = ptr::addr_of_mut!(self.head);
        if self.head.prev.is_null() {
            // SAFETY: initialised in place; the batch does not move (see `new`).
            unsafe { ngx_queue_init(head) };
        }
        head
    }

    /// Takes the first entry out of the batch.
    pub fn pop(&mut self) -> Option<NonNull<HeldRequest>> {
        let head = self.head();
        // SAFETY: an initialised head; entries are HeldRequest links (first field).
        unsafe {
            if ngx_queue_empty(head) {
                return None;
            }
            let link = (*head).next;
            let held = link as *mut HeldRequest;
            ngx_queue_remove(link);
            (*held).queued = false;
            NonNull::new(held)
        }
    }
}
