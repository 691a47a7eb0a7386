//! Which workers are alive, for the shared counts they leave behind. Every worker claims a
//! slot in the shared zone when it starts (its pid, its start time, a claim token); a slot whose
//! process is gone is freed by whichever worker notices, and what it counted (held requests,
//! requests in flight) stops counting. A start or stop whose owner (the token of the worker that
//! sent it) is no longer alive is sent again by the worker that notices.

/// What `/proc/PID/stat` says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie: dead, not yet reaped by its parent), `X` (dead)...
    pub state: char,
    /// Clock ticks since boot when the process started: with the pid, names one process
    /// whatever pids the kernel hands out again.
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`. The command name (second field) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4 to 21 come between the state (3) and the start time (22).
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// What `kill(pid, 0)` answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalProbe {
    /// 0, or EPERM: some process has that pid (maybe another user's, after the pid was reused).
    Exists,
    /// ESRCH.
    NoSuchProcess,
}

/// Whether the worker that claimed a slot (with `recorded_start`, 0 when unknown) still runs.
/// Without `/proc` (`stat` none) the signal probe alone decides.
pub fn slot_holder_alive(probe: SignalProbe, recorded_start: u64, stat: Option<ProcStat>) -> bool {
    if probe == SignalProbe::NoSuchProcess {
        return false;
    }
    match stat {
        Some(stat) if matches!(stat.state, 'Z' | 'X') => false,
        Some(stat) => recorded_start == 0 || stat.start_time == recorded_start,
        None => true,
    }
}

/// Whether a start or stop sent by the worker with claim token `owner` (0: nobody, e.g. a
/// command set before tokens existed) has lost its worker.
pub fn command_orphaned(owner: u64, mut live_tokens: impl Iterator<Item = u64>) -> bool {
    owner != 0 && !live_tokens.any(|token| token == owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (nginx: worker (x)) S 4200 4200 4200 0 -1 4194624 1026 0 0 0 \
                        3 1 0 0 20 0 1 0 987654 123 456 18446744073709551615";

    #[test]
    fn parses_state_and_start_time_past_odd_names() {
        assert_eq!(
            parse_proc_stat(STAT),
            Some(ProcStat {
                state: 'S',
                start_time: 987654
            })
        );
        assert_eq!(parse_proc_stat("4242 (nginx) S 1 2"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn a_gone_zombie_or_reused_pid_is_dead() {
        let running = Some(ProcStat {
            state: 'S',
            start_time: 100,
        });
        assert!(slot_holder_alive(SignalProbe::Exists, 100, running));
        assert!(!slot_holder_alive(SignalProbe::NoSuchProcess, 100, running));
        // The pid now names another process.
        assert!(!slot_holder_alive(SignalProbe::Exists, 99, running));
        let zombie = Some(ProcStat {
            state: 'Z',
            start_time: 100,
        });
        assert!(!slot_holder_alive(SignalProbe::Exists, 100, zombie));
        // No /proc: the signal probe decides.
        assert!(slot_holder_alive(SignalProbe::Exists, 100, None));
        assert!(slot_holder_alive(SignalProbe::Exists, 0, running));
    }

    #[test]
    fn a_command_is_orphaned_once_its_owner_is_gone() {
        assert!(!command_orphaned(7, [3, 7].into_iter()));
        assert!(command_orphaned(7, [3, 8].into_iter()));
        assert!(!command_orphaned(0, std::iter::empty()));
    }
}
