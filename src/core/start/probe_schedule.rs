//! How often the readiness probe tries a starting backend: every millisecond at first, when a
//! quick application is most likely to start listening and a held request waits for the
//! probe, then less often for slow starters, never more than `MAX_DELAY_MS` apart. The probe
//! stops at `supervisord_timeout` in any case, and logs no attempt (only its outcome).

/// Rounds (one connect per address each) tried 1 ms apart.
const FAST_ROUNDS: u64 = 50;
/// Then this many rounds 2 ms apart.
const MEDIUM_ROUNDS: u64 = 200;
/// The longest pause between two rounds.
pub const MAX_DELAY_MS: usize = 4;

/// The pause after round `round` (counted from 1) found no address accepting.
pub fn delay_after_round_ms(round: u64) -> usize {
    if round <= FAST_ROUNDS {
        1
    } else if round <= FAST_ROUNDS + MEDIUM_ROUNDS {
        2
    } else {
        MAX_DELAY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_first_then_bounded() {
        assert_eq!(delay_after_round_ms(1), 1);
        assert_eq!(delay_after_round_ms(FAST_ROUNDS), 1);
        assert_eq!(delay_after_round_ms(FAST_ROUNDS + 1), 2);
        assert_eq!(delay_after_round_ms(FAST_ROUNDS + MEDIUM_ROUNDS + 1), 4);
        assert_eq!(delay_after_round_ms(u64::MAX), MAX_DELAY_MS);
        // The pause never shrinks as rounds go by.
        let mut last = 0;
        for round in 1..2_000 {
            let delay = delay_after_round_ms(round);
            assert!(delay >= last && delay <= MAX_DELAY_MS);
            last = delay;
        }
    }

    #[test]
    fn ten_seconds_of_probing_stay_a_few_thousand_attempts() {
        let (mut elapsed, mut rounds) = (0u64, 0u64);
        while elapsed < 10_000 {
            rounds += 1;
            elapsed += delay_after_round_ms(rounds) as u64;
        }
        assert!(rounds < 3_000, "{rounds} rounds");
    }
}
