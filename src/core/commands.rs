//! Commands (start, stop): which backend one goes to and what it does to a status, the step
//! of the backend state machine (`machine`) for an `Asked` event.
//!
//! With `supervisord none` a command takes effect at once. With a real supervisord it moves the
//! backend into a transitional status (STARTING_UP, SHUTTING_DOWN) and the worker that made that
//! move is the one that talks to supervisord; the outcome then settles the status.

use super::backend_status::{BackendStatus, Command};
use crate::config::control_uri::BackendSelector;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `supervisord none`: statuses change at once, nothing is ever started.
    Immediate,
    /// A real supervisord carries the command out.
    Supervised,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The backend is already where the command would take it.
    AlreadyDone,
    /// The same command is already being carried out: do not repeat it.
    InProgress,
    /// The opposite command is being carried out; this one cannot be taken now.
    Conflict,
    /// Set the status to `status`; when `ask_supervisord` the caller now owns the command.
    Apply {
        status: BackendStatus,
        ask_supervisord: bool,
    },
}

pub fn decide(command: Command, current: BackendStatus, mode: Mode) -> Decision {
    if current == command.target_status() {
        return Decision::AlreadyDone;
    }
    match mode {
        Mode::Immediate => Decision::Apply {
            status: command.target_status(),
            ask_supervisord: false,
        },
        Mode::Supervised if current == command.transitional_status() => Decision::InProgress,
        Mode::Supervised if current == opposite(command).transitional_status() => {
            Decision::Conflict
        }
        Mode::Supervised => Decision::Apply {
            status: command.transitional_status(),
            ask_supervisord: true,
        },
    }
}

/// The status a backend settles in once supervisord has answered a command: the target on
/// success, the status it had before on failure.
pub fn settle(command: Command, succeeded: bool) -> BackendStatus {
    if succeeded {
        command.target_status()
    } else {
        opposite(command).target_status()
    }
}

fn opposite(command: Command) -> Command {
    match command {
        Command::Start => Command::Stop,
        Command::Stop => Command::Start,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectError {
    /// `any` found no backend the command can act on.
    NoCandidate,
}

/// Resolves a selector to a backend index. `any` is the first backend the command would change
/// (for start a DOWN one whose program supervisord has, for stop an UP one); `statuses` and
/// `program_missing` are indexed by backend.
pub fn select_backend(
    command: Command,
    selector: BackendSelector,
    statuses: &[BackendStatus],
    program_missing: &[bool],
) -> Result<usize, SelectError> {
    match selector {
        BackendSelector::Index(index) => Ok(index),
        BackendSelector::Any => {
            let wanted = opposite(command).target_status();
            statuses
                .iter()
                .enumerate()
                .position(|(index, status)| {
                    *status == wanted
                        && !(command == Command::Start
                            && program_missing.get(index).copied().unwrap_or(false))
                })
                .ok_or(SelectError::NoCandidate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    const ALL: [BackendStatus; 4] = [Up, Down, StartingUp, ShuttingDown];

    #[test]
    fn immediate_mode_reaches_the_target_from_any_status() {
        for current in ALL {
            for command in [Command::Start, Command::Stop] {
                let decision = decide(command, current, Mode::Immediate);
                if current == command.target_status() {
                    assert_eq!(decision, Decision::AlreadyDone);
                } else {
                    assert_eq!(
                        decision,
                        Decision::Apply {
                            status: command.target_status(),
                            ask_supervisord: false
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn supervised_start_goes_through_starting_up_once() {
        assert_eq!(
            decide(Command::Start, Down, Mode::Supervised),
            Decision::Apply {
                status: StartingUp,
                ask_supervisord: true
            }
        );
        assert_eq!(
            decide(Command::Start, StartingUp, Mode::Supervised),
            Decision::InProgress
        );
        assert_eq!(
            decide(Command::Start, Up, Mode::Supervised),
            Decision::AlreadyDone
        );
        assert_eq!(
            decide(Command::Start, ShuttingDown, Mode::Supervised),
            Decision::Conflict
        );
    }

    #[test]
    fn supervised_stop_goes_through_shutting_down_once() {
        assert_eq!(
            decide(Command::Stop, Up, Mode::Supervised),
            Decision::Apply {
                status: ShuttingDown,
                ask_supervisord: true
            }
        );
        assert_eq!(
            decide(Command::Stop, ShuttingDown, Mode::Supervised),
            Decision::InProgress
        );
        assert_eq!(
            decide(Command::Stop, Down, Mode::Supervised),
            Decision::AlreadyDone
        );
        assert_eq!(
            decide(Command::Stop, StartingUp, Mode::Supervised),
            Decision::Conflict
        );
    }

    #[test]
    fn settling_puts_the_status_back_on_failure() {
        assert_eq!(settle(Command::Start, true), Up);
        assert_eq!(settle(Command::Start, false), Down);
        assert_eq!(settle(Command::Stop, true), Down);
        assert_eq!(settle(Command::Stop, false), Up);
    }

    #[test]
    fn any_picks_the_first_backend_the_command_changes() {
        let statuses = [Up, StartingUp, Down, Down, Up];
        let all_there = [false; 5];
        assert_eq!(
            select_backend(Command::Start, BackendSelector::Any, &statuses, &all_there),
            Ok(2)
        );
        assert_eq!(
            select_backend(Command::Stop, BackendSelector::Any, &statuses, &all_there),
            Ok(0)
        );
        assert_eq!(
            select_backend(Command::Start, BackendSelector::Any, &[Up, Up], &all_there),
            Err(SelectError::NoCandidate)
        );
        assert_eq!(
            select_backend(
                Command::Stop,
                BackendSelector::Any,
                &[Down, ShuttingDown],
                &all_there
            ),
            Err(SelectError::NoCandidate)
        );
        assert_eq!(
            select_backend(
                Command::Stop,
                BackendSelector::Index(1),
                &statuses,
                &all_there
            ),
            Ok(1)
        );
    }

    #[test]
    fn start_any_passes_over_a_program_supervisord_lacks() {
        let statuses = [Up, Down, Down];
        let missing = [false, true, false];
        assert_eq!(
            select_backend(Command::Start, BackendSelector::Any, &statuses, &missing),
            Ok(2)
        );
        assert_eq!(
            select_backend(Command::Start, BackendSelector::Any, &[Down], &[true]),
            Err(SelectError::NoCandidate)
        );
        // Stopping one is never held back by it.
        assert_eq!(
            select_backend(Command::Stop, BackendSelector::Any, &[Up], &[true]),
            Ok(0)
        );
    }
}
