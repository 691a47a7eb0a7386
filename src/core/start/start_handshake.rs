//! How a start settles. Two parties finish it: supervisord's answer to `startProcess` and the
//! readiness probe (the backend accepts a connection). The probe settles a confirmed start UP,
//! or failed when no address accepted a connection by its deadline (`supervisord_timeout`);
//! supervisord's answer settles a failed start, or a confirmed one when there is nothing to
//! probe. Whoever settles, the status changes only if the backend is still in the command's
//! transitional status (a reconciliation may have settled an orphaned command meanwhile).

use crate::backend_status::{BackendStatus, Command};
use crate::commands::settle;

/// What the two parties of one start have told each other so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartHandshake {
    /// A readiness probe was started for the backend's addresses: it settles the start, UP
    /// when one accepts a connection, failed at its deadline (see `at_probe_deadline`).
    pub probing: bool,
    /// nginx sent `startProcess` for this start and its answer is still to come.
    pub reply_due: bool,
    /// The start could not reach supervisord and waits for it (`park_until_reachable`).
    pub parked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtProbeDeadline {
    /// The start phase is over without an accepted connection: the start failed.
    Fail,
    /// supervisord has not answered the start yet: its answer (or the call's time-out, due
    /// about now) settles a failure with its own reason; the probe keeps trying meanwhile.
    AwaitReply,
    /// The start waits for supervisord to be reachable again; it is sent again then, with a
    /// probe of its own: this one ends without settling anything.
    Leave,
}

/// What the probe does when its time (`supervisord_timeout` from the start) is up.
pub fn at_probe_deadline(handshake: StartHandshake) -> AtProbeDeadline {
    if handshake.parked {
        AtProbeDeadline::Leave
    } else if handshake.reply_due {
        AtProbeDeadline::AwaitReply
    } else {
        AtProbeDeadline::Fail
    }
}

/// What supervisord's answer to a command does to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The backend was still in the command's transitional status: this answer settles it.
    pub owned: bool,
    /// The status it settles in (the target on success, the former status on failure).
    pub status: BackendStatus,
    /// A start failed: requests waiting for it are answered at once.
    pub failed_start: bool,
}

pub fn settle_reply(command: Command, current: BackendStatus, succeeded: bool) -> Settlement {
    let owned = current == command.transitional_status();
    Settlement {
        owned,
        status: settle(command, succeeded),
        failed_start: owned && command == Command::Start && !succeeded,
    }
}

/// A command whose call could not reach supervisord (a transport failure while supervisord is
/// known unreachable: its program may well be gone with it, as when supervisord is restarted).
/// When nobody waits for an answer (a start for held requests, a stop after failed requests) it
/// keeps its transitional status and is sent again once supervisord answers: a stop never puts
/// a backend whose program is gone back UP, a start never answers held requests 502 for an
/// outage (they wait within their usual bounds), and no further call goes out meanwhile. A hand
/// command, whose caller is answered at once, settles back as any failed call does.
pub fn park_until_reachable(command: Command, current: BackendStatus, caller_waits: bool) -> bool {
    !caller_waits && current == command.transitional_status()
}

/// The command to send again for a backend in `status`: one whose worker died (`orphaned`) or
/// one parked while supervisord was unreachable, once it is reachable again.
pub fn command_to_resend(
    status: BackendStatus,
    orphaned: bool,
    parked: bool,
    supervisord_reachable: bool,
) -> Option<Command> {
    let command = match status {
        BackendStatus::StartingUp => Command::Start,
        BackendStatus::ShuttingDown => Command::Stop,
        _ => return None,
    };
    (orphaned || (parked && supervisord_reachable)).then_some(command)
}

/// The probe saw the backend accept a connection: it becomes UP if it is still starting.
pub fn settle_ready(current: BackendStatus) -> Option<BackendStatus> {
    (current == BackendStatus::StartingUp).then_some(BackendStatus::Up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    #[test]
    fn the_start_phase_ends_in_a_failure_unless_supervisord_has_yet_to_answer() {
        let mut handshake = StartHandshake {
            probing: true,
            ..StartHandshake::default()
        };
        // A start seen outside nginx, or one supervisord answered: no connection, failed.
        assert_eq!(at_probe_deadline(handshake), AtProbeDeadline::Fail);
        // Its answer is due at about the same time: it says why the start failed.
        handshake.reply_due = true;
        assert_eq!(at_probe_deadline(handshake), AtProbeDeadline::AwaitReply);
        // Waiting for supervisord to come back: not this probe's to settle.
        handshake.parked = true;
        assert_eq!(at_probe_deadline(handshake), AtProbeDeadline::Leave);
    }

    #[test]
    fn an_answer_settles_only_a_command_still_in_flight() {
        assert_eq!(
            settle_reply(Command::Start, StartingUp, true),
            Settlement {
                owned: true,
                status: Up,
                failed_start: false
            }
        );
        assert_eq!(
            settle_reply(Command::Start, StartingUp, false),
            Settlement {
                owned: true,
                status: Down,
                failed_start: true
            }
        );
        assert_eq!(
            settle_reply(Command::Stop, ShuttingDown, true),
            Settlement {
                owned: true,
                status: Down,
                failed_start: false
            }
        );
        // Settled by a reconciliation already: nothing changes, no failure is recorded.
        let late = settle_reply(Command::Start, Down, false);
        assert!(!late.owned);
        assert!(!late.failed_start);
        assert!(!settle_reply(Command::Stop, Up, true).owned);
    }

    #[test]
    fn readiness_settles_only_a_backend_still_starting() {
        assert_eq!(settle_ready(StartingUp), Some(Up));
        for other in [Up, Down, ShuttingDown] {
            assert_eq!(settle_ready(other), None);
        }
    }
    #[test]
    fn unsent_automatic_commands_wait_for_supervisord_hand_ones_settle() {
        assert!(park_until_reachable(Command::Stop, ShuttingDown, false));
        assert!(park_until_reachable(Command::Start, StartingUp, false));
        assert!(!park_until_reachable(Command::Stop, ShuttingDown, true));
        // Settled meanwhile (e.g. by a reconciliation): nothing to park.
        assert!(!park_until_reachable(Command::Stop, Down, false));
    }

    #[test]
    fn orphaned_and_parked_commands_are_sent_again() {
        assert_eq!(
            command_to_resend(StartingUp, true, false, false),
            Some(Command::Start)
        );
        assert_eq!(
            command_to_resend(ShuttingDown, false, true, true),
            Some(Command::Stop)
        );
        // Parked while supervisord is still away: not yet.
        assert_eq!(command_to_resend(ShuttingDown, false, true, false), None);
        assert_eq!(command_to_resend(StartingUp, false, false, true), None);
        assert_eq!(command_to_resend(Up, true, true, true), None);
        assert_eq!(command_to_resend(Down, true, true, true), None);
    }
}
