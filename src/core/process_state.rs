//! What supervisord says about programs, and what that means for a backend's status.

use super::backend_status::BackendStatus;
use super::xmlrpc::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
    Unknown,
}

impl ProcessState {
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Stopped,
            10 => Self::Starting,
            20 => Self::Running,
            30 => Self::Backoff,
            40 => Self::Stopping,
            100 => Self::Exited,
            200 => Self::Fatal,
            _ => Self::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Backoff => "BACKOFF",
            Self::Stopping => "STOPPING",
            Self::Exited => "EXITED",
            Self::Fatal => "FATAL",
            Self::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `group:name`, or `name` alone when the program is its own group.
    pub full_name: String,
    pub state: ProcessState,
}

/// Reads the array that `supervisor.getAllProcessInfo` returns.
pub fn parse_all_process_info(value: &Value) -> Result<Vec<ProcessInfo>, String> {
    let Value::Array(items) = value else {
        return Err("getAllProcessInfo did not return an array".into());
    };
    items
        .iter()
        .map(|item| {
            let name = item.member("name").and_then(Value::as_str);
            let group = item.member("group").and_then(Value::as_str);
            let state = item.member("state").and_then(Value::as_int);
            match (name, group, state) {
                (Some(name), Some(group), Some(state)) => Ok(ProcessInfo {
                    full_name: if name == group {
                        name.to_owned()
                    } else {
                        format!("{group}:{name}")
                    },
                    state: ProcessState::from_code(state),
                }),
                _ => Err("process info without name, group and state".into()),
            }
        })
        .collect()
}

/// Program name of backend `index`: the prefix (upstream name or `supervisord_name`) and the
/// index. A prefix such as `web:web_` reaches group and numprocs members (`web:web_0`).
pub fn program_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// The status supervisord's view implies for a backend, or `None` to leave it as it is.
///
/// A command in flight (STARTING_UP, SHUTTING_DOWN) owns the status until it settles, unless it
/// is stale (its worker is gone). A program starting outside nginx stays DOWN until RUNNING;
/// one stopping outside nginx is DOWN at once, so no new request goes to it.
pub fn reconciled_status(
    current: BackendStatus,
    observed: Option<ProcessState>,
    command_is_stale: bool,
) -> Option<BackendStatus> {
    let in_flight = matches!(
        current,
        BackendStatus::StartingUp | BackendStatus::ShuttingDown
    );
    if in_flight && !command_is_stale {
        return None;
    }
    let implied = match observed {
        Some(ProcessState::Running) => BackendStatus::Up,
        Some(ProcessState::Starting) if !in_flight => return None,
        _ => BackendStatus::Down,
    };
    (implied != current).then_some(implied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    #[test]
    fn names_follow_the_2010_scheme() {
        assert_eq!(program_name("backend", 0), "backend0");
        assert_eq!(program_name("web:web_", 3), "web:web_3");
    }

    #[test]
    fn reconciliation_follows_supervisord_for_settled_backends() {
        let running = Some(ProcessState::Running);
        assert_eq!(reconciled_status(Down, running, false), Some(Up));
        assert_eq!(reconciled_status(Up, running, false), None);
        for gone in [
            ProcessState::Stopped,
            ProcessState::Exited,
            ProcessState::Fatal,
            ProcessState::Backoff,
            ProcessState::Stopping,
            ProcessState::Unknown,
        ] {
            assert_eq!(
                reconciled_status(Up, Some(gone), false),
                Some(Down),
                "{gone:?}"
            );
            assert_eq!(reconciled_status(Down, Some(gone), false), None, "{gone:?}");
        }
        assert_eq!(
            reconciled_status(Up, None, false),
            Some(Down),
            "unknown to supervisord"
        );
        assert_eq!(
            reconciled_status(Down, Some(ProcessState::Starting), false),
            None
        );
        assert_eq!(
            reconciled_status(Up, Some(ProcessState::Starting), false),
            None
        );
    }

    #[test]
    fn reconciliation_leaves_commands_in_flight_alone_until_stale() {
        let running = Some(ProcessState::Running);
        assert_eq!(reconciled_status(StartingUp, running, false), None);
        assert_eq!(
            reconciled_status(ShuttingDown, Some(ProcessState::Stopped), false),
            None
        );
        assert_eq!(reconciled_status(StartingUp, running, true), Some(Up));
        assert_eq!(
            reconciled_status(StartingUp, Some(ProcessState::Starting), true),
            Some(Down)
        );
        assert_eq!(
            reconciled_status(ShuttingDown, Some(ProcessState::Stopped), true),
            Some(Down)
        );
    }

    #[test]
    fn reads_process_info_structs() {
        let info = |name: &str, group: &str, state: i64| {
            Value::Struct(vec![
                ("name".into(), Value::Str(name.into())),
                ("group".into(), Value::Str(group.into())),
                ("state".into(), Value::Int(state)),
            ])
        };
        let parsed = parse_all_process_info(&Value::Array(vec![
            info("backend0", "backend0", 20),
            info("web_0", "web", 0),
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                ProcessInfo {
                    full_name: "backend0".into(),
                    state: ProcessState::Running
                },
                ProcessInfo {
                    full_name: "web:web_0".into(),
                    state: ProcessState::Stopped
                },
            ]
        );
        assert!(parse_all_process_info(&Value::Int(1)).is_err());
        assert!(parse_all_process_info(&Value::Array(vec![Value::Int(1)])).is_err());
    }
}
