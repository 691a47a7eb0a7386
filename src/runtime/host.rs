//! One supervisord as this worker sees it: a host (`core::config::supervisord_host`), named by the
//! `supervisord` line that leads it. What belongs to supervisord rather than to one upstream
//! lives with that line: its shared facts (reachability, when its programs were last read) in
//! the lead upstream's record, its kept-alive connection, sync timer and last read error in the
//! lead upstream's runtime. Every upstream line naming the same supervisord is a member.

use std::ffi::c_void;

use nginx_sys::{ngx_add_timer, ngx_event_t};

use super::line_runtime::LineRuntime;
use super::worker::{upstream, upstreams, UpstreamRuntime};
use crate::conf::upstream::SupervisordLine;
use crate::shared::records::HostRecord;
use crate::shared::ZoneLock;
use crate::util::log::cycle_log;

/// A supervisord host: the lead line's upstream runtime and line.
#[derive(Clone, Copy)]
pub struct Host {
    pub upstream: &'static UpstreamRuntime,
    pub line: usize,
}

impl Host {
    /// The host of `upstream`'s line `line` (its lead).
    pub fn of_line(upstream: &'static UpstreamRuntime, line: usize) -> Host {
        let (lead_upstream, lead_line) = upstream
            .conf
            .lines
            .get(line)
            .map_or((upstream.conf.index, line), |conf| conf.host_lead);
        Host {
            upstream: self::upstream(lead_upstream).unwrap_or(upstream),
            line: lead_line,
        }
    }

    pub fn conf(&self) -> &'static SupervisordLine {
        &self.upstream.conf.lines[self.line]
    }

    /// The address as written (never the credentials).
    pub fn display(&self) -> &'static str {
        &self.conf().resolved.display
    }

    pub fn shared(&self) -> &'static HostRecord {
        self.upstream.shared().host(self.line)
    }

    /// The zone's lock, with the lead's record (where the host's facts are).
    pub fn lock(&self) -> ZoneLock<'static> {
        self.upstream.lock()
    }

    pub fn runtime(&self) -> &'static LineRuntime {
        &self.upstream.lines[self.line]
    }

    pub fn unreachable(&self) -> bool {
        self.shared().supervisord_unreachable()
    }

    /// Not to be started on while another host can: it never answered yet (its programs'
    /// states are unknown), or it cannot be reached now (`core::policy::placement`).
    pub fn away(&self) -> bool {
        !self.shared().ever_answered() || self.unreachable()
    }

    /// Every upstream line of this host, as (upstream, line), in configuration order.
    pub fn members(&self) -> Vec<(&'static UpstreamRuntime, usize)> {
        let lead = (self.upstream.conf.index, self.line);
        upstreams()
            .iter()
            .flat_map(|member| {
                member
                    .conf
                    .lines
                    .iter()
                    .enumerate()
                    .filter(move |(_, line)| line.host_lead == lead)
                    .map(move |(line, _)| (member, line))
            })
            .collect()
    }

    /// `upstream "a"`, or `upstreams "a", "b"`: the upstreams of this host, for its log lines.
    pub fn members_text(&self) -> String {
        let mut names: Vec<String> = self
            .members()
            .iter()
            .map(|(member, _)| format!("\"{}\"", member.conf.name))
            .collect();
        names.dedup();
        if names.len() == 1 {
            format!("upstream {}", names[0])
        } else {
            format!("upstreams {}", names.join(", "))
        }
    }

    /// Arms the sync timer of this host's line to call `handler` after `after_ms`; `handler`
    /// finds the host again with `Host::of_timer`.
    pub fn arm_sync_timer(&self, handler: unsafe extern "C" fn(*mut ngx_event_t), after_ms: u64) {
        let runtime = self.runtime();
        let event = runtime.sync_timer.get();
        // SAFETY: the event lives in the worker's runtime, which outlives its timers; only this
        // worker's thread touches it.
        unsafe {
            (*event).handler = Some(handler);
            (*event).data = runtime as *const LineRuntime as *mut c_void;
            (*event).log = cycle_log();
            (*event).set_cancelable(1);
            ngx_add_timer(event, after_ms as _);
        }
    }

    /// The host whose sync timer `event` is (see `arm_sync_timer`).
    ///
    /// # Safety
    /// `event` must be a timer armed with `arm_sync_timer`.
    pub unsafe fn of_timer(event: *mut ngx_event_t) -> Option<Host> {
        // SAFETY: `arm_sync_timer` armed `event` (this fn's contract) with its LineRuntime as
        // data, inside the worker's runtime, which lives until the worker exits.
        let runtime = unsafe { &*((*event).data as *const LineRuntime) };
        Some(Host {
            upstream: upstream(runtime.upstream)?,
            line: runtime.line,
        })
    }
}

/// The host-side questions an upstream asks of its backends.
impl UpstreamRuntime {
    /// The supervisord host of backend `index` .
    pub fn host_of(&'static self, index: usize) -> Host {
        let line = self
            .conf
            .backends
            .get(index)
            .map_or(0, |backend| backend.line);
        Host::of_line(self, line)
    }

    /// The hosts of its `supervisord` lines, one per line.
    pub fn hosts(&'static self) -> Vec<Host> {
        (0..self.conf.lines.len())
            .map(|line| Host::of_line(self, line))
            .collect()
    }

    /// Whether another upstream of its host manages the program of backend `index` too (two
    /// upstreams over the same programs): a command on it is news for that upstream as well.
    pub fn program_shared_in_host(&'static self, index: usize) -> bool {
        let backend = &self.conf.backends[index];
        self.host_of(index).members().iter().any(|(other, line)| {
            !std::ptr::eq(*other, self)
                && other
                    .conf
                    .backends
                    .iter()
                    .any(|theirs| theirs.line == *line && theirs.program == backend.program)
        })
    }

    /// Whether the supervisord of backend `index` is known unreachable (its host's fact).
    pub fn supervisord_unreachable(&'static self, index: usize) -> bool {
        self.host_of(index).unreachable()
    }
}
