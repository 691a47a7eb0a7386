//! How the shared zone keeps a slot for every worker alive at once, whatever `worker_processes`
//! says and however many generations overlap during reloads.
//!
//! A worker slot is where a worker counts its own share of the held requests and requests in
//! flight, so that its share can be taken off the totals should it die. Slots come in chunks of
//! `SLOTS_PER_CHUNK`; every shared record has one block of shares per chunk. The zone starts
//! with no chunk and adds one (for every record at once) only when a worker finds every slot of
//! the chunks so far taken by a live worker, so the memory used follows the number of workers
//! actually alive, not a worst case.
//!
//! The bound is nginx's own: a master has at most `MAX_WORKER_SLOTS` child processes at once
//! (`NGX_MAX_PROCESSES`, its process table), old generations still finishing their requests
//! included, so that many slots always suffice. The zone's size reserves room for all of them
//! and depends on the configured upstreams only, never on `worker_processes`: nginx hands a
//! zone over to the new configuration only when its size is unchanged, so a reload that
//! changes the number of workers keeps every status and counter.

/// Slots added to the zone at once.
pub const SLOTS_PER_CHUNK: usize = 64;

/// nginx's `NGX_MAX_PROCESSES`: the most processes one master runs at once.
pub const MAX_WORKER_SLOTS: usize = 1024;

/// The most chunks the zone ever holds.
pub const MAX_CHUNKS: usize = MAX_WORKER_SLOTS.div_ceil(SLOTS_PER_CHUNK);

// Every process nginx may run has a slot.
const _: () = assert!(MAX_CHUNKS * SLOTS_PER_CHUNK >= MAX_WORKER_SLOTS);

/// Where slot `slot` lives: its chunk and its place in the chunk.
pub const fn locate(slot: usize) -> (usize, usize) {
    (slot / SLOTS_PER_CHUNK, slot % SLOTS_PER_CHUNK)
}

/// Where a worker that starts counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotChoice {
    /// A free slot.
    Free(usize),
    /// The slot of a dead worker, once its shares are taken off.
    Reap(usize),
    /// The first slot of a new chunk, once the zone has it.
    Grow(usize),
    /// Every possible slot is taken by a live process (nginx never runs that many).
    None,
}

/// The slot a starting worker takes among the slots of the `chunks` chunks so far. The lowest
/// free slot first, so that slots stay packed in few chunks; then the lowest slot of a dead
/// worker; then a new chunk. `is_free` is cheap (an atomic load); `is_dead` looks at the process
/// (`/proc`), so it is asked only when no slot is free, which happens only at chunk boundaries.
pub fn choose_slot(
    chunks: usize,
    is_free: impl Fn(usize) -> bool,
    mut is_dead: impl FnMut(usize) -> bool,
) -> SlotChoice {
    let slots = chunks.min(MAX_CHUNKS) * SLOTS_PER_CHUNK;
    if let Some(slot) = (0..slots).find(|&slot| is_free(slot)) {
        return SlotChoice::Free(slot);
    }
    if let Some(slot) = (0..slots).find(|&slot| is_dead(slot)) {
        return SlotChoice::Reap(slot);
    }
    if chunks < MAX_CHUNKS {
        SlotChoice::Grow(slots)
    } else {
        SlotChoice::None
    }
}

/// Shared bytes that one record's shares take per chunk: its held count per slot (8 bytes)
/// and each backend's in-flight count per slot (4 bytes).
pub const fn share_block_size(backends: usize) -> usize {
    SLOTS_PER_CHUNK * (8 + 4 * backends)
}

/// Shared bytes a record's shares may take at most (every chunk present).
pub const fn max_share_bytes(backends: usize) -> usize {
    MAX_CHUNKS * share_block_size(backends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slots_are_located_chunk_by_chunk() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(130), (2, 2));
        assert_eq!(
            locate(MAX_WORKER_SLOTS - 1),
            (MAX_CHUNKS - 1, SLOTS_PER_CHUNK - 1)
        );
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Holder {
        Free,
        Alive,
        Dead,
    }

    fn choose(chunks: usize, holder: impl Fn(usize) -> Holder) -> SlotChoice {
        choose_slot(
            chunks,
            |slot| holder(slot) == Holder::Free,
            |slot| holder(slot) == Holder::Dead,
        )
    }

    #[test]
    fn the_zone_grows_only_when_every_slot_is_alive() {
        // No chunk yet (a fresh zone): the first worker makes the first one.
        assert_eq!(choose(0, |_| Holder::Alive), SlotChoice::Grow(0));
        // Two chunks, all alive: the 129th worker makes the third.
        assert_eq!(choose(2, |_| Holder::Alive), SlotChoice::Grow(128));
        // A free slot anywhere wins over a dead one before it.
        let holders = |slot: usize| match slot {
            3 => Holder::Dead,
            100 => Holder::Free,
            _ => Holder::Alive,
        };
        assert_eq!(choose(2, holders), SlotChoice::Free(100));
        // No free slot: the lowest dead one.
        let holders = |slot: usize| match slot {
            7 | 90 => Holder::Dead,
            _ => Holder::Alive,
        };
        assert_eq!(choose(2, holders), SlotChoice::Reap(7));
        // nginx's limit reached (it never is): none.
        assert_eq!(choose(MAX_CHUNKS, |_| Holder::Alive), SlotChoice::None);
    }

    #[test]
    fn the_zone_has_room_for_every_process_nginx_may_run() {
        assert_eq!(share_block_size(0), 512);
        assert_eq!(max_share_bytes(2), MAX_CHUNKS * 64 * 16);
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Workers that start one after another and die at random never take two slots at
        /// once, never make more chunks than the most workers alive at once need, and every
        /// worker gets a slot while nginx's limit holds.
        #[test]
        fn slots_follow_the_workers_alive(
            steps in proptest::collection::vec((any::<bool>(), any::<u16>()), 1..600)
        ) {
            let mut holders: Vec<Holder> = Vec::new();
            let mut most_alive = 0;
            for (start, pick) in steps {
                let alive: Vec<usize> = (0..holders.len())
                    .filter(|&slot| holders[slot] == Holder::Alive)
                    .collect();
                if !start && !alive.is_empty() {
                    holders[alive[pick as usize % alive.len()]] = Holder::Dead;
                    continue;
                }
                if alive.len() == MAX_WORKER_SLOTS {
                    continue;
                }
                let chunks = holders.len() / SLOTS_PER_CHUNK;
                let slot = match choose(chunks, |slot| holders[slot]) {
                    SlotChoice::Free(slot) | SlotChoice::Reap(slot) => slot,
                    SlotChoice::Grow(slot) => {
                        prop_assert_eq!(slot, holders.len());
                        prop_assert!(holders.iter().all(|holder| *holder == Holder::Alive));
                        holders.resize(holders.len() + SLOTS_PER_CHUNK, Holder::Free);
                        slot
                    }
                    SlotChoice::None => {
                        prop_assert!(false, "no slot for the worker {}", alive.len() + 1);
                        unreachable!()
                    }
                };
                prop_assert_ne!(holders[slot], Holder::Alive);
                holders[slot] = Holder::Alive;
                most_alive = most_alive.max(alive.len() + 1);
                prop_assert!(holders.len() <= most_alive.div_ceil(SLOTS_PER_CHUNK) * SLOTS_PER_CHUNK);
            }
        }
    }
}
