//! Where a start goes when an upstream's servers are on several hosts (`server_hosts`): a
//! backend on a host whose supervisord answers, on the host that runs the fewest of the
//! upstream's backends (UP or starting), ties by server order. With one host this is the first
//! startable backend, as before. Only when every host with a startable backend is away does a
//! start go to one of them anyway: it waits there for its supervisord (it is sent once it
//! answers), as with one supervisord.

/// One backend as placement sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placeable {
    /// It may be started now (DOWN, not backing off, its program known).
    pub startable: bool,
    /// Its host (its `supervisord` line).
    pub host: usize,
    /// It runs or starts already (UP or STARTING_UP).
    pub running: bool,
    /// Its supervisord cannot be reached now.
    pub host_away: bool,
}

/// The backend to start, if any.
pub fn pick(backends: &[Placeable]) -> Option<usize> {
    let load = |host: usize| {
        backends
            .iter()
            .filter(|backend| backend.host == host && backend.running)
            .count()
    };
    let best = |reachable_only: bool| {
        backends
            .iter()
            .enumerate()
            .filter(|(_, backend)| backend.startable && !(reachable_only && backend.host_away))
            .min_by_key(|(index, backend)| (load(backend.host), *index))
            .map(|(index, _)| index)
    };
    best(true).or_else(|| best(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(host: usize, startable: bool, running: bool) -> Placeable {
        Placeable {
            startable,
            host,
            running,
            host_away: false,
        }
    }

    #[test]
    fn one_host_starts_the_first_startable() {
        let backends = [on(0, false, true), on(0, true, false), on(0, true, false)];
        assert_eq!(pick(&backends), Some(1));
        assert_eq!(pick(&[on(0, false, true)]), None);
    }

    #[test]
    fn starts_spread_over_hosts_fewest_running_first() {
        // Host 0 runs one backend, host 1 none: host 1's first startable goes.
        let backends = [
            on(0, false, true),
            on(0, true, false),
            on(1, true, false),
            on(1, true, false),
        ];
        assert_eq!(pick(&backends), Some(2));
        // A tie goes by server order.
        let tie = [on(0, true, false), on(1, true, false)];
        assert_eq!(pick(&tie), Some(0));
    }

    #[test]
    fn a_host_whose_supervisord_is_away_is_passed_over_while_another_can_start() {
        let mut backends = [on(0, true, false), on(1, true, false)];
        backends[0].host_away = true;
        assert_eq!(pick(&backends), Some(1));
        // Every host away: the start goes anyway and waits for its supervisord.
        backends[1].host_away = true;
        assert_eq!(pick(&backends), Some(0));
    }
}
