//! Which shared records a reload may reuse and which it may free.
//!
//! Every zone init (start, reload) has a generation; a record remembers the newest generation
//! that claimed it, a worker slot the generation of its worker's configuration. Workers of a
//! generation use only records that generation claimed, so a record is unused once it is not
//! claimed by the newest generation and every live worker belongs to a newer generation than
//! the one that last claimed it.

/// Whether a reload may reuse (keep the statuses of) a record of the same upstream last claimed
/// in `claimed_in`: only if the configuration that runs now claimed it (`newest_live_generation`,
/// the newest generation of a live worker; none at first start). A record of an older
/// configuration was not kept up to date while another server list ran.
pub fn record_reusable(claimed_in: u64, newest_live_generation: Option<u64>) -> bool {
    newest_live_generation.map_or(true, |newest| claimed_in >= newest)
}

/// Whether a record last claimed in `claimed_in` can be freed. `untracked_workers`: some worker
/// found no free slot, so who uses what is not known and nothing is freed.
pub fn record_unused(
    claimed_in: u64,
    current_generation: u64,
    live_generations: &[u64],
    untracked_workers: bool,
) -> bool {
    !untracked_workers
        && claimed_in < current_generation
        && live_generations
            .iter()
            .all(|&generation| generation > claimed_in)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_running_configuration_s_records_are_reused() {
        assert!(record_reusable(3, None));
        assert!(record_reusable(3, Some(3)));
        // Claimed by a reload that failed after the zone init, newer than what runs.
        assert!(record_reusable(4, Some(3)));
        // Reloading back to an older server list: its record went stale meanwhile.
        assert!(!record_reusable(2, Some(3)));
    }

    #[test]
    fn a_record_is_freed_once_its_last_workers_are_gone() {
        // Claimed by the current generation: never.
        assert!(!record_unused(5, 5, &[], false));
        // Old workers of generation 4 still draining.
        assert!(!record_unused(4, 5, &[4, 5, 5], false));
        assert!(record_unused(4, 5, &[5, 5], false));
        // Workers of an even older generation may still use it (claimed by 3 and 4).
        assert!(!record_unused(4, 5, &[3, 5], false));
        assert!(record_unused(4, 5, &[], false));
        assert!(!record_unused(4, 5, &[5], true));
    }
}
