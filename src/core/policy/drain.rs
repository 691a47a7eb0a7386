//! Draining before a stop: the backend leaves rotation in every worker at once (SHUTTING_DOWN
//! takes no new requests), and its program is stopped once no request is in flight to it over
//! all workers, or once the drain timeout has passed.

use crate::backend_status::BackendStatus;

/// How often the worker that drains a backend looks at its in-flight count.
pub const DRAIN_CHECK_INTERVAL_MS: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// Requests are still in flight and there is time left: look again later.
    Wait,
    /// Nothing in flight: stop the program now.
    StopDrained,
    /// The drain timeout passed with `in_flight` requests still running: stop anyway.
    StopTimedOut { in_flight: i64 },
    /// The backend is no longer SHUTTING_DOWN (reconciliation found the program gone, or found
    /// the drain stale and took supervisord's word): there is nothing left to stop.
    Abandoned,
}

/// What to do with a drain begun at `started_ms` for a backend now in `status` with
/// `in_flight` requests over all workers; `balancer_allows`: a C balancer's checker (C API)
/// lets the stop go, or there is none. The drain timeout bounds the checker's wait too.
pub fn drain_step(
    status: BackendStatus,
    in_flight: i64,
    balancer_allows: bool,
    started_ms: u64,
    now_ms: u64,
    timeout_ms: u64,
) -> DrainStep {
    if status != BackendStatus::ShuttingDown {
        DrainStep::Abandoned
    } else if in_flight <= 0 && balancer_allows {
        DrainStep::StopDrained
    } else if now_ms.saturating_sub(started_ms) >= timeout_ms {
        DrainStep::StopTimedOut { in_flight }
    } else {
        DrainStep::Wait
    }
}

/// The time a draining stop counts as begun for the stale-command check of reconciliation
/// (twice `supervisord_timeout` after it): the latest moment its stop call is sent, so that a
/// live drain, however long `supervisord_drain_timeout` is, never looks orphaned, while one
/// whose worker died is still reconciled in the end.
pub fn stop_call_due_ms(now_ms: u64, timeout_ms: u64) -> u64 {
    now_ms.saturating_add(timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    #[test]
    fn an_idle_backend_is_stopped_at_once() {
        assert_eq!(
            drain_step(ShuttingDown, 0, true, 100, 100, 30_000),
            DrainStep::StopDrained
        );
        // A count that went below zero (a worker died mid-request) does not block the stop.
        assert_eq!(
            drain_step(ShuttingDown, -1, true, 100, 100, 30_000),
            DrainStep::StopDrained
        );
    }

    #[test]
    fn a_busy_backend_waits_until_drained_or_timed_out() {
        assert_eq!(
            drain_step(ShuttingDown, 3, true, 100, 29_000, 30_000),
            DrainStep::Wait
        );
        assert_eq!(
            drain_step(ShuttingDown, 3, true, 100, 30_100, 30_000),
            DrainStep::StopTimedOut { in_flight: 3 }
        );
        assert_eq!(
            drain_step(ShuttingDown, 0, true, 100, 30_100, 30_000),
            DrainStep::StopDrained
        );
    }

    #[test]
    fn a_balancer_checker_holds_the_stop_within_the_drain_timeout() {
        assert_eq!(
            drain_step(ShuttingDown, 0, false, 100, 29_000, 30_000),
            DrainStep::Wait
        );
        assert_eq!(
            drain_step(ShuttingDown, 0, false, 100, 30_100, 30_000),
            DrainStep::StopTimedOut { in_flight: 0 }
        );
        assert_eq!(
            drain_step(ShuttingDown, 2, false, 100, 200, 30_000),
            DrainStep::Wait
        );
        assert_eq!(
            drain_step(Up, 0, false, 100, 200, 30_000),
            DrainStep::Abandoned
        );
    }

    #[test]
    fn a_zero_timeout_stops_at_once_whatever_is_in_flight() {
        assert_eq!(
            drain_step(ShuttingDown, 2, true, 100, 100, 0),
            DrainStep::StopTimedOut { in_flight: 2 }
        );
    }

    #[test]
    fn a_backend_settled_meanwhile_is_not_stopped() {
        for status in [Up, Down, StartingUp] {
            assert_eq!(
                drain_step(status, 3, true, 100, 200, 30_000),
                DrainStep::Abandoned
            );
            assert_eq!(
                drain_step(status, 0, true, 100, 200, 30_000),
                DrainStep::Abandoned
            );
        }
    }

    #[test]
    fn a_live_drain_is_not_taken_for_an_orphan() {
        // Reconciliation calls a command stale 2 x supervisord_timeout after it began.
        let (supervisord_timeout, drain_timeout) = (1_000, 10_000);
        let begun = stop_call_due_ms(5_000, drain_timeout);
        let now = 5_000 + drain_timeout; // the stop call is sent now, at the latest
        assert!(now.saturating_sub(begun) <= 2 * supervisord_timeout);
        let orphaned = begun + 2 * supervisord_timeout + 1;
        assert!(orphaned.saturating_sub(begun) > 2 * supervisord_timeout);
        assert_eq!(stop_call_due_ms(u64::MAX - 1, 10), u64::MAX);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = BackendStatus> {
        (0u8..4).prop_map(|raw| BackendStatus::from_raw(raw).unwrap())
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// A drain stops the program only while the backend is still shutting down; it stops
        /// it as drained only when nothing is in flight and the balancer lets it go; it never
        /// waits past the drain timeout; and once it has decided to stop, a later look (same
        /// figures, more time passed) decides the same.
        #[test]
        fn a_drain_stops_only_when_drained_or_timed_out(
            status in any_status(),
            in_flight in -3i64..50,
            balancer_allows: bool,
            started in 0u64..1 << 50,
            elapsed in 0u64..120_000,
            more in 0u64..120_000,
            timeout in 0u64..60_000,
        ) {
            let now = started + elapsed;
            let step = drain_step(status, in_flight, balancer_allows, started, now, timeout);
            prop_assert_eq!(step == DrainStep::Abandoned, status != BackendStatus::ShuttingDown);
            match step {
                DrainStep::StopDrained => prop_assert!(in_flight <= 0 && balancer_allows),
                DrainStep::StopTimedOut { in_flight: left } => {
                    prop_assert!(elapsed >= timeout);
                    prop_assert_eq!(left, in_flight);
                }
                DrainStep::Wait => prop_assert!(elapsed < timeout),
                DrainStep::Abandoned => {}
            }
            let later =
                drain_step(status, in_flight, balancer_allows, started, now + more, timeout);
            if matches!(step, DrainStep::StopDrained | DrainStep::StopTimedOut { .. }) {
                prop_assert_eq!(later, step);
            }
        }

        /// The stop call of a drain that begins now is due no earlier than the drain timeout
        /// from now (saturating, never wrapping round).
        #[test]
        fn the_stop_call_is_due_after_the_drain_timeout(now: u64, timeout: u64) {
            let due = stop_call_due_ms(now, timeout);
            prop_assert!(due >= now);
            prop_assert!(due == u64::MAX || due == now + timeout);
        }
    }
}
