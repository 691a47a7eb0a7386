//! The JSON of `supervisord_status`. Credentials are never part of it: only the address.

use crate::backend_event::BackendEvent;
use crate::backend_status::BackendStatus;

use super::timings::Timings;

pub struct BackendRow<'a> {
    pub server: &'a str,
    pub program: Option<String>,
    pub status: BackendStatus,
    pub in_flight: i64,
    pub requests: u64,
    /// Per `BackendEvent` (indexed by its `slot()`), how many times it happened.
    pub events: [u64; BackendEvent::COUNT],
    /// Starts that ended UP (from the start command to accepting connections).
    pub ready: Timings,
    /// Cold starts (first held request's arrival to its first response header).
    pub cold_start: Timings,
    /// Left of its start backoff, if it waits one out.
    pub backoff_left_ms: Option<u64>,
    /// Since its last request ended (or since it came up, if later); `None` while not UP.
    pub idle_ms: Option<u64>,
    /// This nginx started its program: only such a backend is stopped for idleness or
    /// light load.
    pub started_here: bool,
    /// Its supervisord (address only) and whether it answers; `None` without one.
    pub supervisord: Option<&'a str>,
    pub supervisord_reachable: Option<bool>,
}

/// `{"cause":count,...}` of the events counted in `metric` (`starts`, `stops`).
fn events_by_cause(events: &[u64; BackendEvent::COUNT], metric: &str) -> String {
    let causes: Vec<String> = BackendEvent::ALL
        .iter()
        .filter(|event| event.metric().0 == metric)
        .map(|event| format!("{}:{}", json_string(event.metric().1), events[event.slot()]))
        .collect();
    format!("{{{}}}", causes.join(","))
}

fn optional_bool(value: Option<bool>) -> String {
    value.map_or_else(|| "null".into(), |value| value.to_string())
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "null".into(), |value| value.to_string())
}

pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One upstream; `supervisord` is already a JSON string, `supervisord_reachable` whether it
/// answers (`None` without one). `holds`: holds that ended.
pub fn render_upstream(
    name: &str,
    supervisord: &str,
    supervisord_reachable: Option<bool>,
    held: i64,
    holds: Timings,
    backends: &[BackendRow<'_>],
) -> String {
    let backends: Vec<String> =
        backends
            .iter()
            .enumerate()
            .map(|(index, backend)| {
                format!(
                "{{\"index\":{index},\"server\":{},\"program\":{},\"status\":{},\"in_flight\":{},\
                 \"requests\":{},\"starts\":{},\"stops\":{},\"failed_starts\":{},\
                 \"cold_start_ms\":{{\"count\":{},\"sum\":{}}},\
                 \"ready_ms\":{{\"count\":{},\"sum\":{}}},\"draining\":{},\
                 \"backoff_left_ms\":{},\"idle_ms\":{},\"started_here\":{},\
                 \"supervisord\":{},\"supervisord_reachable\":{}}}",
                json_string(backend.server),
                backend.program.as_deref().map(json_string).unwrap_or_else(|| "null".into()),
                json_string(backend.status.as_str()),
                backend.in_flight,
                backend.requests,
                events_by_cause(&backend.events, "starts"),
                events_by_cause(&backend.events, "stops"),
                backend.events[BackendEvent::StartFailed.slot()],
                backend.cold_start.count,
                backend.cold_start.sum_ms,
                backend.ready.count,
                backend.ready.sum_ms,
                // A stop waits for the requests in flight before supervisord is asked.
                backend.status == BackendStatus::ShuttingDown && backend.in_flight > 0,
                optional(backend.backoff_left_ms),
                optional(backend.idle_ms),
                backend.started_here,
                backend.supervisord.map_or_else(|| "null".into(), json_string),
                optional_bool(backend.supervisord_reachable)
            )
            })
            .collect();
    format!(
        "{{\"name\":{},\"supervisord\":{supervisord},\"supervisord_reachable\":{},\
         \"held\":{held},\"holds\":{{\"count\":{},\"sum_ms\":{}}},\"backends\":[{}]}}",
        json_string(name),
        optional_bool(supervisord_reachable),
        holds.count,
        holds.sum_ms,
        backends.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_renders() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        let rendered = render_upstream(
            "backend",
            &json_string("127.0.0.1:9001"),
            Some(false),
            3,
            Timings {
                count: 4,
                sum_ms: 1250,
            },
            &[BackendRow {
                server: "127.0.0.1:8000",
                program: Some("backend0".into()),
                status: BackendStatus::StartingUp,
                in_flight: 2,
                requests: 7,
                events: {
                    let mut events = [0; BackendEvent::COUNT];
                    events[BackendEvent::StartOnDemand.slot()] = 1;
                    events[BackendEvent::StopByHand.slot()] = 2;
                    events[BackendEvent::StartFailed.slot()] = 3;
                    events
                },
                ready: Timings {
                    count: 1,
                    sum_ms: 300,
                },
                cold_start: Timings {
                    count: 1,
                    sum_ms: 420,
                },
                backoff_left_ms: Some(1500),
                started_here: false,
                idle_ms: None,
                supervisord: Some("127.0.0.1:9001"),
                supervisord_reachable: Some(false),
            }],
        );
        assert_eq!(
            rendered,
            "{\"name\":\"backend\",\"supervisord\":\"127.0.0.1:9001\",\
             \"supervisord_reachable\":false,\"held\":3,\
             \"holds\":{\"count\":4,\"sum_ms\":1250},\"backends\":[\
             {\"index\":0,\"server\":\"127.0.0.1:8000\",\"program\":\"backend0\",\
             \"status\":\"starting up\",\"in_flight\":2,\"requests\":7,\
             \"starts\":{\"on_demand\":1,\"by_hand\":0,\"minimum\":0,\"load\":0,\"balancer\":0},\
             \"stops\":{\"by_hand\":2,\"idle\":0,\"light_load\":0,\"failure\":0,\"balancer\":0},\
             \"failed_starts\":3,\"cold_start_ms\":{\"count\":1,\"sum\":420},\
             \"ready_ms\":{\"count\":1,\"sum\":300},\
             \"draining\":false,\"backoff_left_ms\":1500,\"idle_ms\":null,\"started_here\":false,\
             \"supervisord\":\"127.0.0.1:9001\",\"supervisord_reachable\":false}]}"
        );
    }
}
