//! Crash-loop protection: a program that fails to start is not started again at once. Each
//! consecutive failed start doubles the wait before the next attempt (capped); a start that
//! stays up for a while clears the record. While a backend waits out its backoff, an on-demand
//! start goes to another DOWN backend instead.

/// The first wait after a failed start.
pub const FIRST_DELAY_MS: u64 = 1_000;
/// The longest wait, however many starts failed.
pub const MAX_DELAY_MS: u64 = 60_000;
/// A backend up this long has recovered: its failures are forgotten.
pub const STABLE_AFTER_MS: u64 = 10_000;

/// The failed-start record of one backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartBackoff {
    /// Consecutive failed starts.
    pub failures: u32,
    /// When the last one failed (nginx's monotonic msec).
    pub last_failure_ms: u64,
}

impl StartBackoff {
    /// How long to wait after the last failure before starting again.
    pub fn delay_ms(&self) -> u64 {
        if self.failures == 0 {
            return 0;
        }
        let doublings = (self.failures - 1).min(16);
        FIRST_DELAY_MS
            .saturating_mul(1 << doublings)
            .min(MAX_DELAY_MS)
    }

    /// `None` when a start may go now, else how many ms are left to wait.
    pub fn wait_left_ms(&self, now_ms: u64) -> Option<u64> {
        let ready_at = self.last_failure_ms.saturating_add(self.delay_ms());
        (self.failures > 0 && now_ms < ready_at).then(|| ready_at - now_ms)
    }

    pub fn after_failure(self, now_ms: u64) -> Self {
        Self {
            failures: self.failures.saturating_add(1),
            last_failure_ms: now_ms,
        }
    }

    /// The backend has been up since `up_since_ms`: forget its failures once that is long
    /// enough.
    pub fn after_up(self, up_since_ms: u64, now_ms: u64) -> Self {
        if now_ms.saturating_sub(up_since_ms) >= STABLE_AFTER_MS {
            Self::default()
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_that_never_failed_starts_at_once() {
        assert_eq!(StartBackoff::default().wait_left_ms(0), None);
        assert_eq!(StartBackoff::default().delay_ms(), 0);
    }

    #[test]
    fn each_failure_doubles_the_wait_up_to_the_cap() {
        let mut backoff = StartBackoff::default();
        let mut delays = Vec::new();
        for _ in 0..10 {
            backoff = backoff.after_failure(0);
            delays.push(backoff.delay_ms());
        }
        assert_eq!(
            delays,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]
        );
        // No overflow however long the loop runs.
        let mut many = StartBackoff {
            failures: u32::MAX - 1,
            last_failure_ms: 0,
        };
        many = many.after_failure(5);
        assert_eq!(many.delay_ms(), MAX_DELAY_MS);
    }

    #[test]
    fn the_wait_counts_from_the_last_failure() {
        let backoff = StartBackoff::default()
            .after_failure(100)
            .after_failure(5_000);
        assert_eq!(backoff.wait_left_ms(5_000), Some(2_000));
        assert_eq!(backoff.wait_left_ms(6_999), Some(1));
        assert_eq!(backoff.wait_left_ms(7_000), None);
    }

    #[test]
    fn staying_up_long_enough_forgets_the_failures() {
        let backoff = StartBackoff::default()
            .after_failure(0)
            .after_failure(1_000);
        assert_eq!(
            backoff.after_up(2_000, 2_000 + STABLE_AFTER_MS - 1),
            backoff
        );
        assert_eq!(
            backoff.after_up(2_000, 2_000 + STABLE_AFTER_MS),
            StartBackoff::default()
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Times well below `u64::MAX`, as nginx's monotonic msec are.
    const TIME: std::ops::Range<u64> = 0..1 << 50;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// The wait doubles with each consecutive failure, from the first delay up to the
        /// cap, and never shrinks while failures add up; no failure, no wait.
        #[test]
        fn the_delay_doubles_up_to_the_cap(failures in 0u32..=u32::MAX, last in TIME) {
            let backoff = StartBackoff { failures, last_failure_ms: last };
            let delay = backoff.delay_ms();
            if failures == 0 {
                prop_assert_eq!(delay, 0);
            } else {
                prop_assert!((FIRST_DELAY_MS..=MAX_DELAY_MS).contains(&delay));
            }
            let next = backoff.after_failure(last).delay_ms();
            prop_assert!(next >= delay);
            if failures > 0 && failures < u32::MAX {
                prop_assert_eq!(next, (2 * delay).min(MAX_DELAY_MS));
            }
        }

        /// After a failure at `failed_at`, no start is let through before the delay has
        /// passed, and one is let through from then on; the wait left never exceeds the
        /// delay and runs down with the clock.
        #[test]
        fn no_start_before_the_delay_is_over(
            failures in 0u32..64,
            failed_at in TIME,
            elapsed in 0u64..2 * MAX_DELAY_MS,
            later in 0u64..MAX_DELAY_MS,
        ) {
            let backoff = StartBackoff { failures, last_failure_ms: 0 }.after_failure(failed_at);
            let delay = backoff.delay_ms();
            let now = failed_at + elapsed;
            match backoff.wait_left_ms(now) {
                None => prop_assert!(elapsed >= delay),
                Some(left) => {
                    prop_assert!(elapsed < delay);
                    prop_assert_eq!(left, delay - elapsed);
                    let then = backoff.wait_left_ms(now + later);
                    prop_assert!(then.is_none_or(|left_then| left_then < left || later == 0));
                }
            }
        }

        /// The record is forgotten exactly when the backend has stayed up long enough, and
        /// kept as it was otherwise.
        #[test]
        fn staying_up_long_enough_and_only_that_forgets(
            failures in 0u32..64,
            last in TIME,
            up_since in TIME,
            up_for in 0u64..3 * STABLE_AFTER_MS,
        ) {
            let backoff = StartBackoff { failures, last_failure_ms: last };
            let after = backoff.after_up(up_since, up_since + up_for);
            if up_for >= STABLE_AFTER_MS {
                prop_assert_eq!(after, StartBackoff::default());
                prop_assert_eq!(after.wait_left_ms(up_since + up_for), None);
            } else {
                prop_assert_eq!(after, backoff);
            }
        }
    }
}
