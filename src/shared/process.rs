//! Whether a process still runs, from its pid and its start time (`/proc/PID/stat`), for the
//! worker slots: the decision is `core::zone::liveness`'s.

use nginx_sys::{kill, ngx_pid};

use crate::core::zone::liveness::{parse_proc_stat, slot_holder_alive, ProcStat, SignalProbe};

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// This process's pid and start time (0 when `/proc` cannot tell).
pub fn own_identity() -> (i32, u64) {
    // SAFETY: nginx sets its pid global before any module code runs in a process.
    let pid = unsafe { ngx_pid };
    (pid, proc_stat(pid).map_or(0, |stat| stat.start_time))
}

/// Whether the process that claimed a slot as (`pid`, `start_time`) still runs.
pub fn alive(pid: i32, start_time: u64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { kill(pid, 0) };
    let gone = std::io::Error::last_os_error().raw_os_error() == Some(nginx_sys::ESRCH as i32);
    let probe = if rc != 0 && gone {
        SignalProbe::NoSuchProcess
    } else {
        SignalProbe::Exists
    };
    slot_holder_alive(probe, start_time, proc_stat(pid))
}
