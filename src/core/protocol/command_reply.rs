//! What supervisord's answer to a start or stop does, decided in one place: the commander
//! gathers the facts (the call's outcome, the backend's status under the zone's lock, whether
//! a probe settles the start) and carries out the step this returns.

use crate::backend_status::{BackendStatus, Command};
use crate::protocol::call_outcome::CallError;
use crate::start::reachability::{failure_told_by_reachability, supervisord_away};
use crate::start::start_handshake::{park_until_reachable, settle_reply, Settlement};
use crate::start::start_watch::{fault_means_exit, fault_means_no_program};

/// What the commander knows when supervisord's answer (or the call's failure) arrives.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyFacts {
    pub command: Command,
    /// The command's outcome (ALREADY_STARTED and NOT_RUNNING are success).
    pub outcome: Result<(), CallError>,
    /// The backend's status now, read under the zone's lock.
    pub status: BackendStatus,
    pub supervisord_unreachable: bool,
    /// Someone (a control request) is answered with the outcome at once.
    pub caller_waits: bool,
    /// A readiness probe settles this start (it was started with it).
    pub probing: bool,
    /// A call of this command was cut off before any answer already (`CallError::Cut`).
    pub cut_before: bool,
}

/// How a settled answer is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyLog {
    /// `notice`: the backend moved (`starting up -> up`, `shutting down -> down`).
    Transition,
    /// `debug`: done, but the backend was settled meanwhile by someone else.
    SettledMeanwhile,
    /// `debug`: failed, and the outage's one line tells why.
    ToldByOutage,
    /// `debug`: a start that ended after the backend was settled meanwhile (e.g. stopped by
    /// `/_stop` while starting): the stop is what happened, with its own line.
    EndedAfterSettlement,
    /// `error`: the command failed.
    Failed,
}

/// A settled answer: what changes, and how it is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettleStep {
    pub settlement: Settlement,
    /// supervisord has no program of this name: not started again until it has.
    pub program_missing: bool,
    pub log: ReplyLog,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStep {
    /// supervisord is away (or going): the command keeps its transitional status and is sent
    /// again once supervisord answers. `quiet`: the outage's one line tells it.
    Park {
        quiet: bool,
    },
    /// The start is confirmed and the readiness probe settles it.
    LeaveToProbe,
    /// The program exits at start-up: supervisord's reason is asked for (`getProcessInfo`)
    /// before the start is settled, so that the one line of the step has it.
    AskWhyItExited,
    Settle(SettleStep),
}

impl ReplyStep {
    /// The start nginx had pending ends with this answer (not when it waits for supervisord,
    /// nor when the exit's reason is still to come).
    pub fn ends_pending_start(&self, command: Command) -> bool {
        command == Command::Start && !matches!(self, Self::Park { .. } | Self::AskWhyItExited)
    }
}

pub fn reply_step(facts: &ReplyFacts) -> ReplyStep {
    let command = facts.command;
    if let Err(error) = &facts.outcome {
        if supervisord_away(
            command,
            error,
            facts.supervisord_unreachable,
            facts.cut_before,
        ) && park_until_reachable(command, facts.status, facts.caller_waits)
        {
            return ReplyStep::Park {
                quiet: failure_told_by_reachability(error, facts.supervisord_unreachable),
            };
        }
        if command == Command::Start
            && matches!(error, CallError::Fault(fault) if fault_means_exit(fault))
        {
            return ReplyStep::AskWhyItExited;
        }
    }
    if command == Command::Start && facts.outcome.is_ok() && facts.probing {
        return ReplyStep::LeaveToProbe;
    }
    let settlement = settle_reply(command, facts.status, facts.outcome.is_ok());
    let program_missing = settlement.failed_start
        && matches!(&facts.outcome, Err(CallError::Fault(fault)) if fault_means_no_program(fault));
    let log = match &facts.outcome {
        Ok(()) if settlement.owned => ReplyLog::Transition,
        Ok(()) => ReplyLog::SettledMeanwhile,
        Err(error) if failure_told_by_reachability(error, facts.supervisord_unreachable) => {
            ReplyLog::ToldByOutage
        }
        Err(_) if command == Command::Start && !settlement.owned => ReplyLog::EndedAfterSettlement,
        Err(_) => ReplyLog::Failed,
    };
    ReplyStep::Settle(SettleStep {
        settlement,
        program_missing,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::xmlrpc::Fault;
    use BackendStatus::*;

    fn facts(
        command: Command,
        outcome: Result<(), CallError>,
        status: BackendStatus,
    ) -> ReplyFacts {
        ReplyFacts {
            command,
            outcome,
            status,
            supervisord_unreachable: false,
            caller_waits: false,
            probing: true,
            cut_before: false,
        }
    }

    fn fault(code: i64) -> Result<(), CallError> {
        Err(CallError::Fault(Fault {
            code,
            string: String::new(),
        }))
    }

    fn settled(step: ReplyStep) -> SettleStep {
        match step {
            ReplyStep::Settle(settle) => settle,
            other => panic!("not settled: {other:?}"),
        }
    }

    #[test]
    fn a_confirmed_start_is_the_probes_to_settle() {
        let step = reply_step(&facts(Command::Start, Ok(()), StartingUp));
        assert_eq!(step, ReplyStep::LeaveToProbe);
        assert!(step.ends_pending_start(Command::Start));
        // Without a probe, supervisord's word settles it.
        let mut no_probe = facts(Command::Start, Ok(()), StartingUp);
        no_probe.probing = false;
        let settle = settled(reply_step(&no_probe));
        assert_eq!(settle.settlement.status, Up);
        assert_eq!(settle.log, ReplyLog::Transition);
    }

    #[test]
    fn an_exit_at_start_up_asks_why_first() {
        let step = reply_step(&facts(Command::Start, fault(50), StartingUp));
        assert_eq!(step, ReplyStep::AskWhyItExited);
        assert!(!step.ends_pending_start(Command::Start));
    }

    #[test]
    fn a_missing_program_fails_the_start_and_is_remembered() {
        let settle = settled(reply_step(&facts(Command::Start, fault(10), StartingUp)));
        assert!(settle.settlement.failed_start);
        assert!(settle.program_missing);
        assert_eq!(settle.settlement.status, Down);
        assert_eq!(settle.log, ReplyLog::Failed);
        // Any other failure is a failed start that is not about the name.
        let settle = settled(reply_step(&facts(Command::Start, fault(2), StartingUp)));
        assert!(settle.settlement.failed_start && !settle.program_missing);
    }

    #[test]
    fn an_away_supervisord_parks_commands_nobody_waits_for() {
        let gone = Err(CallError::Transport("refused".into()));
        let mut away = facts(Command::Start, gone.clone(), StartingUp);
        away.supervisord_unreachable = true;
        let step = reply_step(&away);
        assert_eq!(step, ReplyStep::Park { quiet: true });
        assert!(!step.ends_pending_start(Command::Start));
        // Shutting down (a restart): parked, and said once per command.
        let shutting = facts(Command::Stop, fault(6), ShuttingDown);
        assert_eq!(reply_step(&shutting), ReplyStep::Park { quiet: false });
        // A hand command is answered at once: settled back, told by the outage's line.
        away.caller_waits = true;
        let settle = settled(reply_step(&away));
        assert_eq!(settle.log, ReplyLog::ToldByOutage);
        assert_eq!(settle.settlement.status, Down);
        // A socket the workers may not open is no outage to wait out.
        let mut no_access = facts(
            Command::Start,
            Err(CallError::NoAccess("unix:/s".into())),
            StartingUp,
        );
        no_access.supervisord_unreachable = true;
        let settle = settled(reply_step(&no_access));
        assert!(settle.settlement.failed_start);
        assert_eq!(settle.log, ReplyLog::ToldByOutage);
    }

    #[test]
    fn answers_to_a_backend_settled_meanwhile_change_nothing() {
        let settle = settled(reply_step(&facts(Command::Stop, Ok(()), Down)));
        assert!(!settle.settlement.owned);
        assert_eq!(settle.log, ReplyLog::SettledMeanwhile);
        let settle = settled(reply_step(&facts(Command::Start, fault(2), ShuttingDown)));
        assert!(!settle.settlement.owned && !settle.settlement.failed_start);
        assert_eq!(settle.log, ReplyLog::EndedAfterSettlement);
        let settle = settled(reply_step(&facts(Command::Stop, Ok(()), ShuttingDown)));
        assert_eq!(settle.settlement.status, Down);
        assert_eq!(settle.log, ReplyLog::Transition);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::protocol::xmlrpc::Fault;
    use proptest::prelude::*;

    fn any_outcome() -> impl Strategy<Value = Result<(), CallError>> {
        prop_oneof![
            Just(Ok(())),
            Just(Err(CallError::TimedOut)),
            Just(Err(CallError::Transport("reset".into()))),
            Just(Err(CallError::NoAccess("unix:/s".into()))),
            Just(Err(CallError::Unauthorized)),
            Just(Err(CallError::HttpStatus(500))),
            Just(Err(CallError::NotXml)),
            prop_oneof![Just(2i64), Just(6), Just(10), Just(40), Just(50)].prop_map(|code| Err(
                CallError::Fault(Fault {
                    code,
                    string: String::new()
                })
            )),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Only a confirmed start with a probe is left to the probe; only a failed command
        /// that nobody waits for, still in its transitional status, is parked; only a start
        /// asks why it exited; a settlement changes only a backend still in the command's
        /// transitional status, and a failed start is exactly a failed, owned start.
        #[test]
        fn every_answer_takes_one_step(
            start: bool,
            outcome in any_outcome(),
            raw in 0u8..4,
            unreachable: bool,
            caller_waits: bool,
            probing: bool,
        ) {
            let command = if start { Command::Start } else { Command::Stop };
            let status = BackendStatus::from_raw(raw).unwrap();
            let facts = ReplyFacts {
                command,
                outcome: outcome.clone(),
                status,
                supervisord_unreachable: unreachable,
                caller_waits,
                probing,
                cut_before: false,
            };
            match reply_step(&facts) {
                ReplyStep::LeaveToProbe => {
                    prop_assert!(start && outcome.is_ok() && probing);
                }
                ReplyStep::Park { .. } => {
                    prop_assert!(outcome.is_err() && !caller_waits);
                    prop_assert_eq!(status, command.transitional_status());
                }
                ReplyStep::AskWhyItExited => {
                    prop_assert!(start && outcome.is_err());
                }
                ReplyStep::Settle(settle) => {
                    prop_assert_eq!(settle.settlement.owned, status == command.transitional_status());
                    prop_assert_eq!(
                        settle.settlement.failed_start,
                        start && outcome.is_err() && settle.settlement.owned
                    );
                    prop_assert!(!settle.program_missing || settle.settlement.failed_start);
                    prop_assert_eq!(settle.log == ReplyLog::Transition, outcome.is_ok() && settle.settlement.owned);
                }
            }
        }
    }
}
