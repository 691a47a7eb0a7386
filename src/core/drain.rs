//! Draining before a stop: the backend leaves rotation in every worker at once, and its program
//! is stopped once no request is in flight to it over all workers, or once the drain timeout
//! has passed.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// Requests are still in flight and there is time left: look again later.
    Wait,
    /// Nothing in flight: stop the program now.
    StopDrained,
    /// The drain timeout passed with `in_flight` requests still running: stop anyway.
    StopTimedOut { in_flight: i64 },
}

pub fn drain_step(in_flight: i64, started_ms: u64, now_ms: u64, timeout_ms: u64) -> DrainStep {
    if in_flight <= 0 {
        DrainStep::StopDrained
    } else if now_ms.saturating_sub(started_ms) >= timeout_ms {
        DrainStep::StopTimedOut { in_flight }
    } else {
        DrainStep::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_backend_is_stopped_at_once() {
        assert_eq!(drain_step(0, 100, 100, 30_000), DrainStep::StopDrained);
        // A count that went below zero (a worker died mid-request) does not block the stop.
        assert_eq!(drain_step(-1, 100, 100, 30_000), DrainStep::StopDrained);
    }

    #[test]
    fn a_busy_backend_waits_until_drained_or_timed_out() {
        assert_eq!(drain_step(3, 100, 29_000, 30_000), DrainStep::Wait);
        assert_eq!(
            drain_step(3, 100, 30_100, 30_000),
            DrainStep::StopTimedOut { in_flight: 3 }
        );
        assert_eq!(drain_step(0, 100, 30_100, 30_000), DrainStep::StopDrained);
    }
}
