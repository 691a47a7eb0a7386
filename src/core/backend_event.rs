//! What happens to backends, counted per backend in the shared zone for the metrics page and
//! the status JSON: starts and stops by cause, failed starts.

/// One kind of event in a backend's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendEvent {
    /// Started because a request found no backend UP.
    StartOnDemand,
    /// Started through `/_start` (or by hand with supervisorctl, seen by reconciliation).
    StartByHand,
    /// Started to reach `supervisord_min_servers`.
    StartMinimum,
    /// Started because load exceeded `supervisord_scale_up`.
    StartLoad,
    /// A start that failed (the program exits at start-up, or supervisord refused it).
    StartFailed,
    /// Stopped through `/_stop`.
    StopByHand,
    /// Stopped after `supervisord_idle_timeout` without requests.
    StopIdle,
    /// Stopped under light load.
    StopLightLoad,
    /// Taken down or restarted by the failure rule.
    StopFailure,
    /// Started at the request of a C balancer (`ngx_supervisord_execute`).
    StartByBalancer,
    /// Stopped at the request of a C balancer.
    StopByBalancer,
}

impl BackendEvent {
    pub const ALL: [BackendEvent; 11] = [
        Self::StartOnDemand,
        Self::StartByHand,
        Self::StartMinimum,
        Self::StartLoad,
        Self::StartFailed,
        Self::StopByHand,
        Self::StopIdle,
        Self::StopLightLoad,
        Self::StopFailure,
        Self::StartByBalancer,
        Self::StopByBalancer,
    ];

    pub const COUNT: usize = Self::ALL.len();

    /// Its slot among a backend's counters.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// `start` or `stop` (or `failed_start`), and the cause: the metric and label it counts in.
    pub fn metric(self) -> (&'static str, &'static str) {
        match self {
            Self::StartOnDemand => ("starts", "on_demand"),
            Self::StartByHand => ("starts", "by_hand"),
            Self::StartMinimum => ("starts", "minimum"),
            Self::StartLoad => ("starts", "load"),
            Self::StartFailed => ("failed_starts", ""),
            Self::StopByHand => ("stops", "by_hand"),
            Self::StopIdle => ("stops", "idle"),
            Self::StopLightLoad => ("stops", "light_load"),
            Self::StopFailure => ("stops", "failure"),
            Self::StartByBalancer => ("starts", "balancer"),
            Self::StopByBalancer => ("stops", "balancer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_own_slot() {
        for (index, event) in BackendEvent::ALL.iter().enumerate() {
            assert_eq!(event.slot(), index);
        }
        let mut labels: Vec<_> = BackendEvent::ALL.iter().map(|e| e.metric()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), BackendEvent::COUNT);
    }
}
