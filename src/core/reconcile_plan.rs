//! What a `getAllProcessInfo` reply changes. The reply describes supervisord when the call was
//! sent; a backend whose status moved since then (a start settled, a hand command) has newer
//! news than the reply, so the reply leaves it alone until the next round.

use super::backend_status::BackendStatus;
use super::process_state::{program_name, reconciled_status, ProcessInfo, ProcessState};

/// One backend as the reply finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendAtReply {
    pub status: BackendStatus,
    /// Its status changed between sending the call and reading the reply.
    pub changed_since_sent: bool,
    /// Its command in flight is older than a worker could take to settle it.
    pub command_is_stale: bool,
    /// What supervisord says of its program; `None` when it has no such program.
    pub observed: Option<ProcessState>,
    /// Its program runs another process than at the last read (a hand restart).
    pub restarted: bool,
}

/// A status to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub index: usize,
    pub from: BackendStatus,
    pub to: BackendStatus,
}

pub fn reconcile_plan(backends: &[BackendAtReply]) -> Vec<StatusChange> {
    backends
        .iter()
        .enumerate()
        .filter(|(_, backend)| !backend.changed_since_sent)
        .filter_map(|(index, backend)| {
            reconciled_status(
                backend.status,
                backend.observed,
                backend.command_is_stale,
                backend.restarted,
            )
            .map(|to| StatusChange {
                index,
                from: backend.status,
                to,
            })
        })
        .collect()
}

/// The state supervisord reports for each backend's program (`prefix` + index).
pub fn observed_states(
    processes: &[ProcessInfo],
    prefix: &str,
    backend_count: usize,
) -> Vec<Option<ProcessState>> {
    (0..backend_count)
        .map(|index| {
            let program = program_name(prefix, index);
            processes
                .iter()
                .find(|process| process.full_name == program)
                .map(|process| process.state)
        })
        .collect()
}

/// The process id supervisord reports for each backend's program (0: not running, or no such
/// program).
pub fn observed_pids(processes: &[ProcessInfo], prefix: &str, backend_count: usize) -> Vec<i64> {
    (0..backend_count)
        .map(|index| {
            let program = program_name(prefix, index);
            processes
                .iter()
                .find(|process| process.full_name == program)
                .map_or(0, |process| process.pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    fn at_reply(status: BackendStatus, observed: Option<ProcessState>) -> BackendAtReply {
        BackendAtReply {
            status,
            changed_since_sent: false,
            command_is_stale: false,
            observed,
            restarted: false,
        }
    }

    #[test]
    fn settled_backends_follow_supervisord() {
        let plan = reconcile_plan(&[
            at_reply(Down, Some(ProcessState::Running)),
            at_reply(Up, Some(ProcessState::Exited)),
            at_reply(Up, Some(ProcessState::Running)),
            at_reply(Up, None),
        ]);
        assert_eq!(
            plan,
            vec![
                StatusChange {
                    index: 0,
                    from: Down,
                    to: Up
                },
                StatusChange {
                    index: 1,
                    from: Up,
                    to: Down
                },
                StatusChange {
                    index: 3,
                    from: Up,
                    to: Down
                },
            ]
        );
    }

    #[test]
    fn a_backend_that_changed_after_the_call_was_sent_is_left_alone() {
        // The probe made it UP after supervisord answered "STARTING": the old news loses.
        let mut backend = at_reply(Up, Some(ProcessState::Stopped));
        backend.changed_since_sent = true;
        assert!(reconcile_plan(&[backend]).is_empty());
    }

    #[test]
    fn commands_in_flight_are_left_to_their_worker_unless_stale() {
        let mut backend = at_reply(StartingUp, Some(ProcessState::Fatal));
        assert!(reconcile_plan(&[backend]).is_empty());
        backend.command_is_stale = true;
        assert_eq!(
            reconcile_plan(&[backend]),
            vec![StatusChange {
                index: 0,
                from: StartingUp,
                to: Down
            }]
        );
    }

    #[test]
    fn programs_are_matched_by_their_full_name() {
        let processes = vec![
            ProcessInfo {
                full_name: "web:web_1".into(),
                state: ProcessState::Running,
                pid: 7,
            },
            ProcessInfo {
                full_name: "web:web_10".into(),
                state: ProcessState::Fatal,
                pid: 0,
            },
        ];
        assert_eq!(
            observed_states(&processes, "web:web_", 2),
            vec![None, Some(ProcessState::Running)]
        );
        assert_eq!(observed_pids(&processes, "web:web_", 2), vec![0, 7]);
    }
}
