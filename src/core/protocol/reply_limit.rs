//! The size limit on supervisord's replies (`supervisord_max_reply_size`): a reply over it is
//! refused (`getAllProcessInfo` grows with the number of programs, about 1.3 KiB each), and the
//! operator is told once, with the directive to raise, not at every sync. The mark of what was
//! reported is shared by the workers of an upstream; it is cleared when the same call fits
//! again, so a reply that outgrows the limit later is reported again.

/// The default limit: room for about 3,000 programs in one `getAllProcessInfo` reply.
pub const DEFAULT_MAX_REPLY_SIZE: u64 = 4 << 20;

/// The smallest limit the directive takes: any reply of supervisord's (a head of a few hundred
/// bytes and a small body) fits.
pub const MIN_MAX_REPLY_SIZE: u64 = 1 << 10;

/// A method's mark: never 0, which stands for "nothing reported".
pub fn method_mark(method: &str) -> u64 {
    // FNV-1a: stable across workers and processes (the mark lives in shared memory).
    let hash = method
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    hash.max(1)
}

/// How a call's reply compared with the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplySize {
    OverLimit,
    /// It arrived whole, within the limit.
    Fits,
}

/// The shared mark after a reply of `method` (its `method_mark`) and whether this worker logs
/// the reply over the limit: once per method until a reply of it fits again.
pub fn next_mark(mark: u64, method: u64, size: ReplySize) -> (u64, bool) {
    match size {
        ReplySize::OverLimit if mark == method => (mark, false),
        ReplySize::OverLimit => (method, true),
        ReplySize::Fits if mark == method => (0, false),
        ReplySize::Fits => (mark, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: &str = "supervisor.getAllProcessInfo";

    #[test]
    fn reported_once_then_again_only_after_it_fit() {
        let all = method_mark(ALL);
        let (mark, report) = next_mark(0, all, ReplySize::OverLimit);
        assert!(report);
        // Every later sync: quiet.
        assert_eq!(next_mark(mark, all, ReplySize::OverLimit), (mark, false));
        // Other calls that fit do not clear it.
        let state = method_mark("supervisor.getState");
        assert_ne!(state, all);
        assert_eq!(next_mark(mark, state, ReplySize::Fits), (mark, false));
        // The limit was raised (or programs removed): it fits, and is reported again should it
        // outgrow the limit later.
        let (mark, report) = next_mark(mark, all, ReplySize::Fits);
        assert_eq!((mark, report), (0, false));
        assert!(next_mark(mark, all, ReplySize::OverLimit).1);
    }

    #[test]
    fn marks_are_never_the_empty_mark() {
        assert_ne!(method_mark(""), 0);
        assert_ne!(method_mark(ALL), 0);
        assert_eq!(method_mark(ALL), method_mark(ALL));
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Over any sequence of replies of one method, the lines logged are exactly the
        /// replies over the limit that follow a reply that fit (or come first).
        #[test]
        fn one_line_per_run_of_replies_over_the_limit(sizes in proptest::collection::vec(any::<bool>(), 0..200)) {
            let all = method_mark(ALL);
            let mut mark = 0;
            let mut previous_over = false;
            for over in sizes {
                let size = if over { ReplySize::OverLimit } else { ReplySize::Fits };
                let (next, report) = next_mark(mark, all, size);
                prop_assert_eq!(report, over && !previous_over);
                mark = next;
                previous_over = over;
            }
        }
    }
}
