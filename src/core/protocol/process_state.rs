//! What supervisord says about programs, and what that means for a backend's status.

use crate::protocol::xmlrpc::Value;

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
    /// Its process id; 0 when it is not running.
    pub pid: i64,
}

/// Reads the array that `supervisor.getAllProcessInfo` returns.
pub fn parse_all_process_info(value: &Value) -> Result<Vec<ProcessInfo>, String> {
    let Value::Array(items) = value else {
        return Err("getAllProcessInfo did not return an array".into());
    };
    items
        .iter()
        .map(|item| {
            let state = item.member("state").and_then(Value::as_int);
            match (full_name(item), state) {
                (Some(full_name), Some(state)) => Ok(ProcessInfo {
                    full_name,
                    state: ProcessState::from_code(state),
                    pid: item.member("pid").and_then(Value::as_int).unwrap_or(0),
                }),
                _ => Err("process info without name, group and state".into()),
            }
        })
        .collect()
}

/// The program called `full_name` among those a reply lists.
pub fn process_named<'a>(processes: &'a [ProcessInfo], full_name: &str) -> Option<&'a ProcessInfo> {
    processes
        .iter()
        .find(|process| process.full_name == full_name)
}

/// What a `getAllProcessInfo` reply says in full of the program `full_name` (the same struct
/// as `getProcessInfo`'s), when it has it.
pub fn find_process_detail(value: &Value, full_name_wanted: &str) -> Option<ProcessDetail> {
    let Value::Array(items) = value else {
        return None;
    };
    items
        .iter()
        .find(|item| full_name(item).as_deref() == Some(full_name_wanted))
        .and_then(|item| parse_process_info(item).ok())
}

/// How long the program `full_name` has been running, in whole seconds, by supervisord's own
/// clock (`now - start` of a `getAllProcessInfo` reply); `None` when it is not running or the
/// reply does not say.
pub fn running_for_s(value: &Value, full_name_wanted: &str) -> Option<u64> {
    let Value::Array(items) = value else {
        return None;
    };
    let item = items
        .iter()
        .find(|item| full_name(item).as_deref() == Some(full_name_wanted))?;
    let start = item.member("start").and_then(Value::as_int)?;
    let now = item.member("now").and_then(Value::as_int)?;
    let pid = item.member("pid").and_then(Value::as_int).unwrap_or(0);
    (start > 0 && pid > 0).then(|| now.saturating_sub(start).max(0) as u64)
}

/// `group:name`, or `name` alone when the program is its own group.
fn full_name(item: &Value) -> Option<String> {
    let name = item.member("name").and_then(Value::as_str)?;
    let group = item.member("group").and_then(Value::as_str)?;
    Some(if name == group {
        name.to_owned()
    } else {
        format!("{group}:{name}")
    })
}

/// Program name of backend `index`: the prefix (upstream name or `supervisord_name`) and the
/// index. A prefix such as `web:web_` reaches group and numprocs members (`web:web_0`).
pub fn program_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// The program runs another process than the one seen last (0: none was running then).
pub fn restarted(pid_before: i64, pid_now: i64) -> bool {
    pid_before != 0 && pid_now != 0 && pid_now != pid_before
}

/// What `supervisor.getProcessInfo` says of one program, as far as a start is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessDetail {
    pub state: Option<ProcessState>,
    pub exit_status: Option<i64>,
    /// supervisord's reason when it gave up (`spawnerr`), e.g. "Exited too quickly".
    pub spawn_error: String,
    pub description: String,
}

/// Reads the struct that `supervisor.getProcessInfo` returns.
pub fn parse_process_info(value: &Value) -> Result<ProcessDetail, String> {
    let Some(state) = value.member("state").and_then(Value::as_int) else {
        return Err("getProcessInfo did not return a process state".into());
    };
    let text = |name: &str| {
        value
            .member(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    Ok(ProcessDetail {
        state: Some(ProcessState::from_code(state)),
        exit_status: value.member("exitstatus").and_then(Value::as_int),
        spawn_error: text("spawnerr"),
        description: text("description"),
    })
}

impl ProcessDetail {
    /// supervisord's own account of a program that did not stay up, for the log:
    /// `FATAL: Exited too quickly (process log may have details)`, `EXITED, exit status 3`.
    pub fn reason(&self) -> String {
        let state = self.state.unwrap_or(ProcessState::Unknown).name();
        let mut reason = state.to_owned();
        // supervisord's exit status is only current once the program has EXITED.
        if let (Some(status), Some(ProcessState::Exited)) = (self.exit_status, self.state) {
            reason.push_str(&format!(", exit status {status}"));
        }
        let detail = if !self.spawn_error.is_empty() {
            &self.spawn_error
        } else {
            &self.description
        };
        if !detail.is_empty() {
            reason.push_str(": ");
            reason.push_str(detail);
        }
        reason
    }
}

/// The names supervisord knows that look like `expected` (same name after the group, or one
/// containing the other), else the first few it knows: for an error line about a program
/// name that supervisord does not have (e.g. its group prefix forgotten).
pub fn names_like(expected: &str, processes: &[ProcessInfo]) -> String {
    const SHOWN: usize = 5;
    let base = |name: &str| name.rsplit(':').next().unwrap_or(name).to_owned();
    let wanted = base(expected);
    let close: Vec<&str> = processes
        .iter()
        .map(|process| process.full_name.as_str())
        .filter(|name| {
            let other = base(name);
            other == wanted || other.contains(&wanted) || wanted.contains(&other)
        })
        .collect();
    let (list, more) = if close.is_empty() {
        let all: Vec<&str> = processes.iter().map(|p| p.full_name.as_str()).collect();
        let more = all.len().saturating_sub(SHOWN);
        (all.into_iter().take(SHOWN).collect::<Vec<_>>(), more)
    } else {
        let more = close.len().saturating_sub(SHOWN);
        (close.into_iter().take(SHOWN).collect(), more)
    };
    if list.is_empty() {
        return "supervisord has no programs".into();
    }
    let quoted: Vec<String> = list.iter().map(|name| format!("\"{name}\"")).collect();
    let mut text = format!("supervisord has {}", quoted.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_2010_scheme() {
        assert_eq!(program_name("backend", 0), "backend0");
        assert_eq!(program_name("web:web_", 3), "web:web_3");
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
                    state: ProcessState::Running,
                    pid: 0,
                },
                ProcessInfo {
                    full_name: "web:web_0".into(),
                    state: ProcessState::Stopped,
                    pid: 0,
                },
            ]
        );
        assert!(parse_all_process_info(&Value::Int(1)).is_err());
        assert!(parse_all_process_info(&Value::Array(vec![Value::Int(1)])).is_err());
    }

    #[test]
    fn finds_one_program_in_full_in_all_process_info() {
        let info = |name: &str, group: &str, state: i64, spawnerr: &str| {
            Value::Struct(vec![
                ("name".into(), Value::Str(name.into())),
                ("group".into(), Value::Str(group.into())),
                ("state".into(), Value::Int(state)),
                ("spawnerr".into(), Value::Str(spawnerr.into())),
            ])
        };
        let all = Value::Array(vec![
            info("backend0", "backend0", 20, ""),
            info("web_1", "web", 30, "Exited too quickly"),
        ]);
        let detail = find_process_detail(&all, "web:web_1").unwrap();
        assert_eq!(detail.reason(), "BACKOFF: Exited too quickly");
        assert_eq!(
            find_process_detail(&all, "backend0").unwrap().state,
            Some(ProcessState::Running)
        );
        assert_eq!(find_process_detail(&all, "web_1"), None);
        assert_eq!(find_process_detail(&Value::Int(1), "backend0"), None);
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
        assert_eq!(process_named(&processes, "web:web_0"), None);
        let web_1 = process_named(&processes, "web:web_1").unwrap();
        assert_eq!((web_1.state, web_1.pid), (ProcessState::Running, 7));
        assert_eq!(process_named(&processes, "web_1"), None);
    }

    #[test]
    fn tells_how_long_a_program_has_been_running_by_supervisord_s_clock() {
        let info = |name: &str, pid: i64, start: i64, now: i64| {
            Value::Struct(vec![
                ("name".into(), Value::Str(name.into())),
                ("group".into(), Value::Str(name.into())),
                ("pid".into(), Value::Int(pid)),
                ("start".into(), Value::Int(start)),
                ("now".into(), Value::Int(now)),
            ])
        };
        let all = Value::Array(vec![
            info("backend0", 4242, 1_700_000_000, 1_700_000_003),
            info("backend1", 0, 1_700_000_000, 1_700_000_090),
            info("backend2", 77, 1_700_000_010, 1_700_000_005),
        ]);
        assert_eq!(running_for_s(&all, "backend0"), Some(3));
        assert_eq!(running_for_s(&all, "backend1"), None, "not running");
        assert_eq!(
            running_for_s(&all, "backend2"),
            Some(0),
            "a clock step back"
        );
        assert_eq!(running_for_s(&all, "backend3"), None);
    }

    #[test]
    fn reads_process_info_and_words_the_reason() {
        let info = |state: i64, exit: i64, spawnerr: &str, description: &str| {
            Value::Struct(vec![
                ("name".into(), Value::Str("backend0".into())),
                ("state".into(), Value::Int(state)),
                ("exitstatus".into(), Value::Int(exit)),
                ("spawnerr".into(), Value::Str(spawnerr.into())),
                ("description".into(), Value::Str(description.into())),
            ])
        };
        let fatal = parse_process_info(&info(
            200,
            1,
            "Exited too quickly (process log may have details)",
            "Exited too quickly (process log may have details)",
        ))
        .unwrap();
        assert_eq!(fatal.state, Some(ProcessState::Fatal));
        assert_eq!(
            fatal.reason(),
            "FATAL: Exited too quickly (process log may have details)"
        );
        let exited = parse_process_info(&info(100, 3, "", "Mar 12 10:00 AM")).unwrap();
        assert_eq!(exited.reason(), "EXITED, exit status 3: Mar 12 10:00 AM");
        let bare = parse_process_info(&info(30, 1, "", "")).unwrap();
        assert_eq!(bare.reason(), "BACKOFF");
        assert!(parse_process_info(&Value::Int(3)).is_err());
    }

    #[test]
    fn names_like_a_missing_one_are_suggested() {
        let known = |names: &[&str]| -> Vec<ProcessInfo> {
            names
                .iter()
                .map(|name| ProcessInfo {
                    full_name: (*name).into(),
                    state: ProcessState::Stopped,
                    pid: 0,
                })
                .collect()
        };
        assert_eq!(
            names_like(
                "backend0",
                &known(&["other", "web:backend0", "web:backend1"])
            ),
            "supervisord has \"web:backend0\""
        );
        assert_eq!(
            names_like("web_0", &known(&["web:web_0", "web:web_1"])),
            "supervisord has \"web:web_0\""
        );
        assert_eq!(
            names_like("zz0", &known(&["a", "b", "c", "d", "e", "f", "g"])),
            "supervisord has \"a\", \"b\", \"c\", \"d\", \"e\" and 2 more"
        );
        assert_eq!(names_like("zz0", &[]), "supervisord has no programs");
    }
}
