//! The check every integration test gets for free: nginx's error log may hold no `[alert]`,
//! `[emerg]` or `[crit]` line and no worker that "exited on signal", unless the test allowed
//! that very line (with a reason).

/// A log line a test expects: any forbidden line containing `substring` passes.
#[derive(Clone, Debug)]
pub struct AllowedLine {
    pub substring: String,
    pub why: String,
}

impl AllowedLine {
    pub fn new(substring: &str, why: &str) -> Self {
        Self {
            substring: substring.into(),
            why: why.into(),
        }
    }
}

/// The kinds of lines no test may leave in the error log unless it allowed them.
pub const FORBIDDEN: [&str; 4] = ["[alert]", "[emerg]", "[crit]", "exited on signal"];

/// Whether `line` is an `[alert]`, `[emerg]` or `[crit]` line or tells of a worker killed by a
/// signal.
pub fn is_forbidden(line: &str) -> bool {
    FORBIDDEN.iter().any(|kind| line.contains(kind))
}

/// The lines of `log` that are forbidden and not allowed, in order.
pub fn offending_lines(log: &str, allowed: &[AllowedLine]) -> Vec<String> {
    log.lines()
        .filter(|line| is_forbidden(line))
        .filter(|line| {
            !allowed
                .iter()
                .any(|allowed| line.contains(&allowed.substring))
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
2025/01/01 00:00:00 [notice] 10#10: using the \"epoll\" event method
2025/01/01 00:00:00 [notice] 10#10: start worker process 11
2025/01/01 00:00:01 [error] 11#11: *1 no live upstreams while connecting to upstream
2025/01/01 00:00:01 [warn] 11#11: supervisord: something worth a warning
2025/01/01 00:00:02 [notice] 10#10: worker process 11 exited with code 0
2025/01/01 00:00:02 [info] 11#11: *2 client closed connection
2025/01/01 00:00:02 [debug] 11#11: *2 http finalize request: 0
";

    #[test]
    fn a_clean_log_passes() {
        assert_eq!(offending_lines(CLEAN, &[]), Vec::<String>::new());
        assert_eq!(offending_lines("", &[]), Vec::<String>::new());
    }

    #[test]
    fn each_forbidden_kind_is_flagged() {
        for line in [
            "2025/01/01 00:00:01 [alert] 10#10: worker process 11 exited on signal 11 (core dumped)",
            "2025/01/01 00:00:01 [alert] 11#11: epoll_ctl(1, 5) failed (17: File exists)",
            "2025/01/01 00:00:01 [emerg] 10#10: bind() to 127.0.0.1:80 failed (98: Address in use)",
            "2025/01/01 00:00:01 [crit] 11#11: *3 connect() to unix:/x.sock failed (2: No such file)",
            "2025/01/01 00:00:01 [notice] 10#10: worker process 11 exited on signal 9",
        ] {
            let log = format!("{CLEAN}{line}\n{CLEAN}");
            assert_eq!(offending_lines(&log, &[]), vec![line.to_string()], "{line}");
        }
    }

    #[test]
    fn every_offending_line_is_reported_in_order() {
        let log = "\
a [crit] first
b [notice] fine
c [alert] second
d [emerg] third
";
        assert_eq!(
            offending_lines(log, &[]),
            ["a [crit] first", "c [alert] second", "d [emerg] third"]
        );
    }

    #[test]
    fn allowed_lines_pass_and_only_those() {
        let crit = "2025/01/01 00:00:01 [crit] 11#11: connect() to unix:/missing.sock failed (2: No such file or directory)";
        let killed = "2025/01/01 00:00:01 [alert] 10#10: worker process 11 exited on signal 9";
        let other =
            "2025/01/01 00:00:01 [crit] 11#11: pwrite() failed (28: No space left on device)";
        let log = format!("{CLEAN}{crit}\n{killed}\n{other}\n");
        let allowed = [
            AllowedLine::new(
                "/missing.sock failed",
                "the test points at a missing socket",
            ),
            AllowedLine::new("exited on signal 9", "the test kills a worker"),
        ];
        assert_eq!(offending_lines(&log, &allowed), vec![other.to_string()]);
        assert_eq!(offending_lines(&log, &allowed[..1]).len(), 2);
        assert!(offending_lines(&format!("{CLEAN}{crit}\n"), &allowed).is_empty());
    }

    #[test]
    fn level_words_outside_brackets_are_not_flagged() {
        let log = "2025/01/01 [error] 11#11: upstream said: critical alert emerged\n";
        assert!(offending_lines(log, &[]).is_empty());
    }
}
