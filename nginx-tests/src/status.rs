//! The JSON of the `supervisord_status` location (`src/core/render/status_json.rs`), parsed.

use serde::Deserialize;

/// `{"upstreams":[...]}`: every upstream the module manages.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SupervisordStatus {
    pub upstreams: Vec<UpstreamStatus>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct UpstreamStatus {
    pub name: String,
    /// The supervisord address (never the credentials), e.g. `unix:/run/s.sock`, `none`.
    pub supervisord: String,
    /// Whether that supervisord answers (null without one).
    pub supervisord_reachable: Option<bool>,
    /// Requests held until a backend of this upstream is up.
    pub held: u64,
    /// Holds that ended so far, and how long they lasted in total.
    pub holds: Holds,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Holds {
    pub count: u64,
    pub sum_ms: u64,
}

/// Starts by cause.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Starts {
    pub on_demand: u64,
    pub by_hand: u64,
    pub minimum: u64,
    pub load: u64,
    /// Asked for by a C balancer (`ngx_supervisord_execute`).
    pub balancer: u64,
}

/// Stops by cause.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Stops {
    pub by_hand: u64,
    pub idle: u64,
    pub light_load: u64,
    pub failure: u64,
    /// Asked for by a C balancer.
    pub balancer: u64,
}

/// How many times something took a while (a cold start, a start until ready), and how long in
/// total.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Timings {
    pub count: u64,
    pub sum: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct BackendStatus {
    pub index: usize,
    pub server: String,
    /// The supervisord program; null for an upstream without supervisord.
    pub program: Option<String>,
    pub status: Status,
    pub in_flight: i64,
    /// Requests the balancer sent it.
    pub requests: u64,
    pub starts: Starts,
    pub stops: Stops,
    pub failed_starts: u64,
    /// From the first request held while none was to its first response header.
    pub cold_start_ms: Timings,
    /// From a start nginx sent to the backend accepting connections.
    pub ready_ms: Timings,
    /// Shutting down, waiting for its requests in flight.
    pub draining: bool,
    /// Left of its start backoff, if it waits one out.
    pub backoff_left_ms: Option<u64>,
    /// Since its last request (UP backends only).
    pub idle_ms: Option<u64>,
    /// This nginx started its program (only then does it stop it for idleness or light load).
    pub started_here: bool,
    /// Its supervisord's address and whether it answers (null without one).
    pub supervisord: Option<String>,
    pub supervisord_reachable: Option<bool>,
}

impl BackendStatus {
    /// Its place and state, without the counters (which grow with every request).
    pub fn state(&self) -> (usize, &str, Option<&str>, Status, i64) {
        (
            self.index,
            &self.server,
            self.program.as_deref(),
            self.status,
            self.in_flight,
        )
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Status {
    #[serde(rename = "up")]
    Up,
    #[serde(rename = "down")]
    Down,
    #[serde(rename = "starting up")]
    StartingUp,
    #[serde(rename = "shutting down")]
    ShuttingDown,
}

impl SupervisordStatus {
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> &UpstreamStatus {
        self.upstreams
            .iter()
            .find(|upstream| upstream.name == name)
            .unwrap_or_else(|| panic!("no upstream {name:?} in {self:?}"))
    }
}

impl UpstreamStatus {
    /// Whether any backend has `status`.
    pub fn any(&self, status: Status) -> bool {
        self.backends.iter().any(|backend| backend.status == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_module_renders() {
        // As src/core/render/status_json.rs renders it, plus an upstream without supervisord.
        let figures = "\"requests\":7,\
                       \"starts\":{\"on_demand\":1,\"by_hand\":0,\"minimum\":0,\"load\":0,\"balancer\":0},\
                       \"stops\":{\"by_hand\":2,\"idle\":0,\"light_load\":0,\"failure\":0,\"balancer\":0},\
                       \"failed_starts\":3,\"cold_start_ms\":{\"count\":1,\"sum\":420},\"ready_ms\":{\"count\":1,\"sum\":300},\
                       \"draining\":false,\"backoff_left_ms\":1500,\"idle_ms\":null,\"started_here\":true";
        let body = format!(
            "{{\"upstreams\":[{{\"name\":\"backend\",\"supervisord\":\"127.0.0.1:9001\",\
             \"supervisord_reachable\":true,\
             \"held\":3,\"holds\":{{\"count\":4,\"sum_ms\":1250}},\"backends\":[\
             {{\"index\":0,\"server\":\"127.0.0.1:8000\",\
             \"program\":\"backend0\",\"status\":\"starting up\",\"in_flight\":2,{figures}}},\
             {{\"index\":1,\"server\":\"127.0.0.1:8001\",\"program\":\"backend1\",\
             \"status\":\"shutting down\",\"in_flight\":0,{figures}}}]}},\
             {{\"name\":\"plain \\\"q\\\"\",\"supervisord\":\"\",\"supervisord_reachable\":null,\"held\":0,\
             \"holds\":{{\"count\":0,\"sum_ms\":0}},\"backends\":[\
             {{\"index\":0,\"server\":\"127.0.0.1:8002\",\"program\":null,\
             \"status\":\"up\",\"in_flight\":0,{figures}}}]}}]}}\n"
        );
        let status = SupervisordStatus::parse(&body).unwrap();
        let backend = status.upstream("backend");
        assert_eq!(backend.supervisord, "127.0.0.1:9001");
        assert_eq!(backend.supervisord_reachable, Some(true));
        assert_eq!(backend.held, 3);
        assert_eq!(
            backend.holds,
            Holds {
                count: 4,
                sum_ms: 1250
            }
        );
        assert_eq!(
            backend.backends[0],
            BackendStatus {
                index: 0,
                server: "127.0.0.1:8000".into(),
                program: Some("backend0".into()),
                status: Status::StartingUp,
                in_flight: 2,
                requests: 7,
                starts: Starts {
                    on_demand: 1,
                    ..Starts::default()
                },
                stops: Stops {
                    by_hand: 2,
                    ..Stops::default()
                },
                failed_starts: 3,
                cold_start_ms: Timings { count: 1, sum: 420 },
                ready_ms: Timings { count: 1, sum: 300 },
                draining: false,
                backoff_left_ms: Some(1500),
                idle_ms: None,
                started_here: true,
                supervisord: None,
                supervisord_reachable: None,
            }
        );
        assert!(backend.any(Status::ShuttingDown));
        assert!(!backend.any(Status::Up));
        let plain = status.upstream("plain \"q\"");
        assert_eq!(plain.backends[0].program, None);
        assert_eq!(plain.backends[0].status, Status::Up);
    }

    #[test]
    fn refuses_what_is_not_the_status() {
        assert!(SupervisordStatus::parse("<html>502</html>").is_err());
        assert!(SupervisordStatus::parse("{\"upstreams\":[{\"name\":\"x\"}]}").is_err());
        assert!(SupervisordStatus::parse(
            "{\"upstreams\":[{\"name\":\"x\",\"supervisord\":\"\",\"held\":0,\
             \"holds\":{\"count\":0,\"sum_ms\":0},\"backends\":[\
             {\"index\":0,\"server\":\"s\",\"program\":null,\"status\":\"sleeping\",\"in_flight\":0,\
             \"requests\":0,\"starts\":{\"on_demand\":0,\"by_hand\":0,\"minimum\":0,\"load\":0,\"balancer\":0},\
             \"stops\":{\"by_hand\":0,\"idle\":0,\"light_load\":0,\"failure\":0,\"balancer\":0},\
             \"failed_starts\":0,\"cold_start_ms\":{\"count\":0,\"sum\":0},\"ready_ms\":{\"count\":0,\"sum\":0}}]}]}"
        )
        .is_err());
    }
}
