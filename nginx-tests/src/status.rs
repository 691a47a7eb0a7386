//! The JSON of the `supervisord_status` location (`src/core/status_json.rs`), parsed.

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
    /// Requests held until a backend of this upstream is up.
    pub held: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct BackendStatus {
    pub index: usize,
    pub server: String,
    /// The supervisord program; null for an upstream without supervisord.
    pub program: Option<String>,
    pub status: Status,
    pub in_flight: i64,
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
        // As src/core/status_json.rs renders it, plus an upstream without supervisord.
        let body = "{\"upstreams\":[{\"name\":\"backend\",\"supervisord\":\"127.0.0.1:9001\",\
                    \"held\":3,\"backends\":[{\"index\":0,\"server\":\"127.0.0.1:8000\",\
                    \"program\":\"backend0\",\"status\":\"starting up\",\"in_flight\":2},\
                    {\"index\":1,\"server\":\"127.0.0.1:8001\",\"program\":\"backend1\",\
                    \"status\":\"shutting down\",\"in_flight\":0}]},\
                    {\"name\":\"plain \\\"q\\\"\",\"supervisord\":\"\",\"held\":0,\"backends\":[\
                    {\"index\":0,\"server\":\"127.0.0.1:8002\",\"program\":null,\
                    \"status\":\"up\",\"in_flight\":0}]}]}\n";
        let status = SupervisordStatus::parse(body).unwrap();
        let backend = status.upstream("backend");
        assert_eq!(backend.supervisord, "127.0.0.1:9001");
        assert_eq!(backend.held, 3);
        assert_eq!(
            backend.backends[0],
            BackendStatus {
                index: 0,
                server: "127.0.0.1:8000".into(),
                program: Some("backend0".into()),
                status: Status::StartingUp,
                in_flight: 2,
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
            "{\"upstreams\":[{\"name\":\"x\",\"supervisord\":\"\",\"held\":0,\"backends\":[\
             {\"index\":0,\"server\":\"s\",\"program\":null,\"status\":\"sleeping\",\"in_flight\":0}]}]}"
        )
        .is_err());
    }
}
