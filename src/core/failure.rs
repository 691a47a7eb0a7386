//! What a failed request (connection refused, reset, timed out) does to its backend. As in the
//! 2010 module, a failing backend is taken out and stopped through supervisord; once every
//! backend is down, the next request starts one again and is held meanwhile.
//!
//! A backend is failing only when every one of its addresses failed recently: a `server` name
//! that resolves to several addresses (`localhost` -> ::1 and 127.0.0.1) while the program
//! listens on one of them is served by that one, and nginx's own `max_fails`/`fail_timeout`
//! keep requests off the other. A backend with one address is stopped at its first failure.

use super::backend_status::BackendStatus;
use super::commands::Mode;

/// How recent the failures of a backend's other addresses must be to count with this one
/// (nginx's default `fail_timeout`).
pub const ADDRESS_FAILURE_WINDOW_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Leave the backend as it is (not UP any more, an address still works, or nothing to stop).
    Ignore,
    /// Take it out (SHUTTING_DOWN) and stop its program.
    Stop,
}

/// `last_failures` holds, per address of the backend, when a request to it last failed
/// (including the failure being decided on), or none.
pub fn failure_action(
    mode: Mode,
    current: BackendStatus,
    last_failures: &[Option<u64>],
    now_ms: u64,
) -> FailureAction {
    let every_address_failing = last_failures.iter().all(|failed| {
        failed.is_some_and(|at| now_ms.saturating_sub(at) <= ADDRESS_FAILURE_WINDOW_MS)
    });
    match (mode, current) {
        (Mode::Supervised, BackendStatus::Up) if every_address_failing => FailureAction::Stop,
        _ => FailureAction::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    const NOW: u64 = 1_000_000;

    #[test]
    fn only_an_up_supervised_backend_is_stopped() {
        let failed_now = [Some(NOW)];
        assert_eq!(
            failure_action(Mode::Supervised, Up, &failed_now, NOW),
            FailureAction::Stop
        );
        for other in [Down, StartingUp, ShuttingDown] {
            assert_eq!(
                failure_action(Mode::Supervised, other, &failed_now, NOW),
                FailureAction::Ignore
            );
        }
        // With `supervisord none` there is nothing to stop; the balancer's own
        // max_fails/fail_timeout handle failures.
        assert_eq!(
            failure_action(Mode::Immediate, Up, &failed_now, NOW),
            FailureAction::Ignore
        );
    }

    #[test]
    fn one_bad_address_of_several_does_not_stop_the_backend() {
        // localhost: ::1 refuses, 127.0.0.1 never failed.
        assert_eq!(
            failure_action(Mode::Supervised, Up, &[Some(NOW), None], NOW),
            FailureAction::Ignore
        );
        // The other address failed too, recently: the program is gone.
        assert_eq!(
            failure_action(Mode::Supervised, Up, &[Some(NOW), Some(NOW - 3_000)], NOW),
            FailureAction::Stop
        );
        // ... but long ago it does not count.
        assert_eq!(
            failure_action(
                Mode::Supervised,
                Up,
                &[Some(NOW), Some(NOW - ADDRESS_FAILURE_WINDOW_MS - 1)],
                NOW
            ),
            FailureAction::Ignore
        );
    }
}
