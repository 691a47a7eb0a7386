//! The decisions behind the C API (`include/ngx_supervisord.h`): which backend an "any"
//! command of a balancer acts on, when such a command comes too soon after the last one, and
//! the load figures its load monitor is told. As in ngx_supervisord 1.4, except where noted.

use crate::backend_status::{BackendStatus, Command};

/// ngx_supervisord 1.4 dropped an "any" command within 30 s of the last command.
pub const ANY_COMMAND_SPACING_MAX_MS: u64 = 30_000;

/// `ngx_supervisord_load_t`'s multiplier: load is in hundredths of a request per second.
pub const LOAD_MULTIPLIER: u64 = 100;

/// What a balancer's backend looks like to an "any" command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnyCandidate {
    pub status: BackendStatus,
    /// Waiting out a start backoff: not started by "start any".
    pub backing_off: bool,
    /// supervisord has no program of its name: not started by "start any".
    pub program_missing: bool,
}

/// Why an "any" command does nothing (it is still "accepted": NGX_OK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnySkipped {
    /// Less than the spacing since the last "any" command that went ahead.
    TooSoon,
    /// A backend is already starting (for start) or stopping (for stop).
    InProgress,
    /// No backend the command could act on.
    NoCandidate,
}

/// How far apart a balancer's "any" commands must be: 1.4's 30 s, or the load interval when
/// shorter (a load monitor acts at most once per report anyway).
pub fn any_command_spacing_ms(load_interval_ms: u64) -> u64 {
    load_interval_ms.min(ANY_COMMAND_SPACING_MAX_MS)
}

/// The backend an "any" command acts on: for start, the first DOWN backend not backing off;
/// for stop, the last UP backend (1.4 stopped the first, backend 0, which is also the one an
/// on-demand start picks first: it would be started again for the next request after a lull).
pub fn pick_any(
    command: Command,
    backends: &[AnyCandidate],
    since_last_any_ms: Option<u64>,
    spacing_ms: u64,
) -> Result<usize, AnySkipped> {
    if since_last_any_ms.is_some_and(|since| since < spacing_ms) {
        return Err(AnySkipped::TooSoon);
    }
    let transitional = match command {
        Command::Start => BackendStatus::StartingUp,
        Command::Stop => BackendStatus::ShuttingDown,
    };
    if backends
        .iter()
        .any(|backend| backend.status == transitional)
    {
        return Err(AnySkipped::InProgress);
    }
    let found = match command {
        Command::Start => backends.iter().position(|backend| {
            backend.status == BackendStatus::Down
                && !backend.backing_off
                && !backend.program_missing
        }),
        Command::Stop => backends
            .iter()
            .rposition(|backend| backend.status == BackendStatus::Up),
    };
    found.ok_or(AnySkipped::NoCandidate)
}

/// The figures of one load report (`ngx_supervisord_load_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadFigures {
    /// Requests per second per UP backend, times `LOAD_MULTIPLIER`.
    pub load: u64,
    pub requests: u64,
    pub interval_ms: u64,
    pub up: u64,
    pub backends: u64,
}

/// The load over an interval of `interval_ms` in which `requests` requests went to the
/// upstream (over all workers), with `up` of `backends` backends UP now. 0 when nothing was
/// asked or nothing is UP, as in 1.4.
pub fn load_figures(requests: u64, interval_ms: u64, up: u64, backends: u64) -> LoadFigures {
    let load = if requests == 0 || up == 0 || interval_ms == 0 {
        0
    } else {
        let per_second_x100 =
            u128::from(requests) * u128::from(LOAD_MULTIPLIER) * 1000 / u128::from(interval_ms);
        u64::try_from(per_second_x100 / u128::from(up)).unwrap_or(u64::MAX)
    };
    LoadFigures {
        load,
        requests,
        interval_ms,
        up,
        backends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    fn backends(statuses: &[BackendStatus]) -> Vec<AnyCandidate> {
        statuses
            .iter()
            .map(|&status| AnyCandidate {
                status,
                backing_off: false,
                program_missing: false,
            })
            .collect()
    }

    #[test]
    fn start_any_takes_the_first_down_backend_not_backing_off() {
        let mut list = backends(&[Up, Down, Down]);
        assert_eq!(pick_any(Command::Start, &list, None, 1000), Ok(1));
        list[1].backing_off = true;
        assert_eq!(pick_any(Command::Start, &list, None, 1000), Ok(2));
        list[2].backing_off = true;
        assert_eq!(
            pick_any(Command::Start, &list, None, 1000),
            Err(AnySkipped::NoCandidate)
        );
    }

    #[test]
    fn start_any_passes_over_a_program_supervisord_lacks() {
        let mut list = backends(&[Up, Down, Down]);
        list[1].program_missing = true;
        assert_eq!(pick_any(Command::Start, &list, None, 1000), Ok(2));
        list[2].program_missing = true;
        assert_eq!(
            pick_any(Command::Start, &list, None, 1000),
            Err(AnySkipped::NoCandidate)
        );
    }

    #[test]
    fn stop_any_takes_the_last_up_backend() {
        let list = backends(&[Up, Up, Down]);
        assert_eq!(pick_any(Command::Stop, &list, None, 1000), Ok(1));
        assert_eq!(
            pick_any(Command::Stop, &backends(&[Down, Down]), None, 1000),
            Err(AnySkipped::NoCandidate)
        );
    }

    #[test]
    fn nothing_while_the_same_kind_of_transition_runs() {
        let list = backends(&[Up, StartingUp, Down]);
        assert_eq!(
            pick_any(Command::Start, &list, None, 1000),
            Err(AnySkipped::InProgress)
        );
        assert_eq!(pick_any(Command::Stop, &list, None, 1000), Ok(0));
        let list = backends(&[Up, ShuttingDown, Up]);
        assert_eq!(
            pick_any(Command::Stop, &list, None, 1000),
            Err(AnySkipped::InProgress)
        );
    }

    #[test]
    fn any_commands_are_spaced() {
        let list = backends(&[Up, Down]);
        assert_eq!(
            pick_any(Command::Start, &list, Some(999), 1000),
            Err(AnySkipped::TooSoon)
        );
        assert_eq!(pick_any(Command::Start, &list, Some(1000), 1000), Ok(1));
        assert_eq!(any_command_spacing_ms(60_000), 30_000);
        assert_eq!(any_command_spacing_ms(2_000), 2_000);
    }

    #[test]
    fn load_is_hundredths_of_a_request_per_second_per_up_backend() {
        // 120 requests in 60 s over 2 backends: 1 r/s each.
        assert_eq!(load_figures(120, 60_000, 2, 3).load, 100);
        // 25 requests in 2 s on 1 backend: 12.5 r/s.
        assert_eq!(load_figures(25, 2_000, 1, 2).load, 1250);
        assert_eq!(load_figures(0, 60_000, 2, 3).load, 0);
        assert_eq!(load_figures(10, 60_000, 0, 3).load, 0);
        assert_eq!(
            load_figures(u64::MAX, 1, 1, 1).load,
            u64::MAX,
            "saturates rather than wraps"
        );
        let figures = load_figures(7, 1_000, 1, 4);
        assert_eq!(
            (
                figures.requests,
                figures.interval_ms,
                figures.up,
                figures.backends
            ),
            (7, 1_000, 1, 4)
        );
    }
}
