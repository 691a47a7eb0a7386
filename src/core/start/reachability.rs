//! Whether supervisord can be reached, as one shared fact per upstream, so that an outage is
//! one line in the error log and its end another, whatever the number of calls meanwhile.
//!
//! A call that could not even hand its request over (connect refused, socket missing, no
//! permission, timed out before sending) says supervisord is unreachable; any reply, even a
//! fault or a 401, says it is reachable; a call that sent its request and then got nothing
//! (e.g. a `startProcess` that waits longer than `supervisord_timeout`) says nothing either way.
//!
//! Requests keep triggering calls while supervisord is known unreachable: each costs one
//! failed connect, and it is how the module notices at once that supervisord is back (a
//! request never waits for the next `supervisord_sync_interval`). Such calls are quiet: their
//! failures are covered by the one "unreachable" line.

use crate::backend_status::Command;
use crate::protocol::call_outcome::CallError;

/// How far one call got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStage {
    /// The request was not (entirely) handed to supervisord.
    NotSent,
    /// Sent, but nothing came back.
    Sent,
    /// Some reply came back.
    Answered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Reachable,
    Unreachable,
}

/// What one finished call says about supervisord's reachability; none when it says nothing.
pub fn reach_after_call(stage: CallStage, succeeded: bool) -> Option<Reach> {
    match (stage, succeeded) {
        (_, true) | (CallStage::Answered, false) => Some(Reach::Reachable),
        (CallStage::NotSent, false) => Some(Reach::Unreachable),
        (CallStage::Sent, false) => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReachChange {
    /// Log once, at `error`.
    BecameUnreachable,
    /// Log once, at `notice`.
    BecameReachable,
    /// Nothing new: `debug` at most.
    Unchanged,
}

/// The change a call's verdict makes to the shared state (`was_unreachable`).
/// `flipped_since_sent`: the shared state changed after the call began, so its verdict is
/// older news (a reply to a call sent before an outage, read after another worker saw the
/// outage, must not announce supervisord back).
pub fn reach_change(
    was_unreachable: bool,
    now: Option<Reach>,
    flipped_since_sent: bool,
) -> ReachChange {
    if flipped_since_sent {
        return ReachChange::Unchanged;
    }
    match (was_unreachable, now) {
        (false, Some(Reach::Unreachable)) => ReachChange::BecameUnreachable,
        (true, Some(Reach::Reachable)) => ReachChange::BecameReachable,
        _ => ReachChange::Unchanged,
    }
}

/// Whether the failure of one call is already told by a line logged once for all workers (so
/// the caller logs it at `debug` only): transport failures and timeouts while supervisord is
/// known unreachable (the shared "unreachable" line), and a reply over the size limit (the
/// client's line, see `reply_limit`). Faults, HTTP errors and the like get their own line.
pub fn failure_told_by_reachability(error: &CallError, supervisord_unreachable: bool) -> bool {
    match error {
        CallError::Transport(_)
        | CallError::Cut(_)
        | CallError::TimedOut
        | CallError::NoAccess(_) => supervisord_unreachable,
        CallError::ReplyTooLarge { .. } => true,
        _ => false,
    }
}

/// What starts and stops do while supervisord cannot be reached for `error`, for the one line
/// of the outage: a socket the workers may not open stays shut until the setting is fixed, so
/// starts fail at once (held requests get 502) rather than wait.
pub fn while_unreachable(error: &CallError) -> &'static str {
    match error {
        CallError::NoAccess(_) => "starts fail at once (502) until the workers may open it",
        _ => "starts and stops wait until it can be reached again",
    }
}

/// supervisord's fault for any call while it shuts down (its programs are being stopped).
pub const FAULT_SHUTDOWN_STATE: i64 = 6;

/// Whether a failed start or stop met a supervisord that is away or going away rather than a
/// verdict on the program: it is known unreachable, it is shutting down (as when it restarts),
/// or, for a stop, the connection broke or timed out before any answer (supervisord going away
/// while it handled the call: whether the program stopped is unknown, and a backend being
/// stopped is safest out of rotation). Such a command waits for supervisord to answer again
/// rather than settling (see `start_handshake::park_until_reachable`); sending it again is
/// harmless (a start finds the program started, a stop finds it stopped). A start cut off
/// before any answer (`CallError::Cut`) the first time (`cut_before`: its call was cut off
/// once already) waits too: supervisord going away resets the calls it was handling. A start
/// that broke otherwise on a reachable supervisord, or cut off twice, fails at once: its held
/// requests are answered, as does one that may not open supervisord's socket
/// (`CallError::NoAccess`: nothing to wait for).
pub fn supervisord_away(
    command: Command,
    error: &CallError,
    supervisord_unreachable: bool,
    cut_before: bool,
) -> bool {
    match error {
        CallError::Transport(_) | CallError::TimedOut => {
            supervisord_unreachable || command == Command::Stop
        }
        CallError::Cut(_) => supervisord_unreachable || command == Command::Stop || !cut_before,
        CallError::Fault(fault) => fault.code == FAULT_SHUTDOWN_STATE,
        _ => false,
    }
}

/// The HTTP status of a control request (`/_start/N`, `/_stop/N`) whose call to supervisord
/// failed at once with `error`: 503 (try again later) when supervisord cannot be reached for now
/// (not running, restarting, its socket missing), 502 for anything else, a socket the workers
/// may not open included (a setting to fix, not an outage to wait out).
pub fn control_failure_status(error: &CallError, supervisord_unreachable: bool) -> u16 {
    match error {
        CallError::Transport(_) | CallError::Cut(_) | CallError::TimedOut
            if supervisord_unreachable =>
        {
            503
        }
        _ => 502,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::xmlrpc::Fault;

    #[test]
    fn only_a_call_that_could_not_send_means_unreachable() {
        assert_eq!(
            reach_after_call(CallStage::NotSent, false),
            Some(Reach::Unreachable)
        );
        assert_eq!(reach_after_call(CallStage::Sent, false), None);
        assert_eq!(
            reach_after_call(CallStage::Answered, false),
            Some(Reach::Reachable)
        );
        assert_eq!(
            reach_after_call(CallStage::Answered, true),
            Some(Reach::Reachable)
        );
    }

    #[test]
    fn only_transitions_are_news() {
        use ReachChange::*;
        assert_eq!(
            reach_change(false, Some(Reach::Unreachable), false),
            BecameUnreachable
        );
        assert_eq!(
            reach_change(true, Some(Reach::Unreachable), false),
            Unchanged
        );
        assert_eq!(
            reach_change(true, Some(Reach::Reachable), false),
            BecameReachable
        );
        assert_eq!(
            reach_change(false, Some(Reach::Reachable), false),
            Unchanged
        );
        assert_eq!(reach_change(true, None, false), Unchanged);
        assert_eq!(reach_change(false, None, false), Unchanged);
    }

    #[test]
    fn a_verdict_older_than_the_last_flip_is_no_news() {
        use ReachChange::*;
        // Sent before another worker saw the outage, answered after: still unreachable.
        assert_eq!(reach_change(true, Some(Reach::Reachable), true), Unchanged);
        // Began during the outage, failed after another worker saw supervisord back.
        assert_eq!(
            reach_change(false, Some(Reach::Unreachable), true),
            Unchanged
        );
    }

    #[test]
    fn repeated_transport_failures_are_quiet_but_faults_are_not() {
        let refused = CallError::Transport("connect to unix:/x failed: connection refused".into());
        assert!(failure_told_by_reachability(&refused, true));
        assert!(failure_told_by_reachability(&CallError::TimedOut, true));
        let over_limit = CallError::ReplyTooLarge {
            size: 5 << 20,
            limit: 4 << 20,
        };
        assert!(failure_told_by_reachability(&over_limit, false));
        assert!(failure_told_by_reachability(&over_limit, true));
        assert!(!failure_told_by_reachability(&refused, false));
        let fault = CallError::Fault(Fault {
            code: 50,
            string: "SPAWN_ERROR: backend0".into(),
        });
        assert!(!failure_told_by_reachability(&fault, true));
        assert!(!failure_told_by_reachability(
            &CallError::Unauthorized,
            true
        ));
    }

    #[test]
    fn a_shutting_down_supervisord_is_away_too() {
        let shutting_down = CallError::Fault(Fault {
            code: FAULT_SHUTDOWN_STATE,
            string: "SHUTDOWN_STATE".into(),
        });
        assert!(supervisord_away(
            Command::Start,
            &shutting_down,
            false,
            false
        ));
        let reset = CallError::Transport("receive failed: connection reset by peer".into());
        assert!(supervisord_away(Command::Stop, &reset, false, false));
        assert!(supervisord_away(
            Command::Stop,
            &CallError::TimedOut,
            false,
            false
        ));
        // A start that broke on a reachable supervisord is a failed start.
        assert!(!supervisord_away(Command::Start, &reset, false, false));
        assert!(supervisord_away(Command::Start, &reset, true, false));
        let spawn = CallError::Fault(Fault {
            code: 50,
            string: "SPAWN_ERROR: backend0".into(),
        });
        assert!(!supervisord_away(Command::Start, &spawn, true, false));
        assert!(!supervisord_away(
            Command::Stop,
            &CallError::Unauthorized,
            true,
            false
        ));
    }

    #[test]
    fn a_control_request_meeting_an_away_supervisord_gets_503_else_502() {
        let refused = CallError::Transport("connect to unix:/x failed: connection refused".into());
        assert_eq!(control_failure_status(&refused, true), 503);
        assert_eq!(control_failure_status(&refused, false), 502);
        let no_access = CallError::NoAccess("unix:/run/supervisor.sock".into());
        assert_eq!(control_failure_status(&no_access, true), 502);
        assert_eq!(control_failure_status(&CallError::Unauthorized, false), 502);
    }

    #[test]
    fn a_start_cut_off_before_any_answer_waits_once() {
        let cut = CallError::Cut("receive failed: connection reset by peer".into());
        // supervisord going away (a restart) resets the start it was handling.
        assert!(supervisord_away(Command::Start, &cut, false, false));
        // Cut off again on a reachable supervisord: no outage, a failed start.
        assert!(!supervisord_away(Command::Start, &cut, false, true));
        assert!(supervisord_away(Command::Start, &cut, true, true));
        assert!(supervisord_away(Command::Stop, &cut, false, true));
        assert!(failure_told_by_reachability(&cut, true));
        assert!(!failure_told_by_reachability(&cut, false));
    }

    #[test]
    fn a_socket_the_workers_may_not_open_fails_starts_at_once_quietly() {
        let no_access = CallError::NoAccess("unix:/run/supervisor.sock".into());
        assert!(!supervisord_away(Command::Start, &no_access, true, false));
        assert!(!supervisord_away(Command::Stop, &no_access, true, false));
        // The outage's one line tells it; the failed starts after it are debug lines.
        assert!(failure_told_by_reachability(&no_access, true));
        assert!(while_unreachable(&no_access).contains("502"));
        assert!(while_unreachable(&CallError::TimedOut).contains("wait"));
    }
}
