//! The JSON of `supervisord_status`. Credentials are never part of it: only the address.

use super::backend_status::BackendStatus;

pub struct BackendView<'a> {
    pub server: &'a str,
    pub program: Option<String>,
    pub status: BackendStatus,
    pub in_flight: i64,
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

/// One upstream; `supervisord` is already a JSON string.
pub fn render_upstream(
    name: &str,
    supervisord: &str,
    held: i64,
    backends: &[BackendView<'_>],
) -> String {
    let backends: Vec<String> =
        backends
            .iter()
            .enumerate()
            .map(|(index, backend)| {
                format!(
                "{{\"index\":{index},\"server\":{},\"program\":{},\"status\":{},\"in_flight\":{}}}",
                json_string(backend.server),
                backend.program.as_deref().map(json_string).unwrap_or_else(|| "null".into()),
                json_string(backend.status.as_str()),
                backend.in_flight
            )
            })
            .collect();
    format!(
        "{{\"name\":{},\"supervisord\":{supervisord},\"held\":{held},\"backends\":[{}]}}",
        json_string(name),
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
            3,
            &[BackendView {
                server: "127.0.0.1:8000",
                program: Some("backend0".into()),
                status: BackendStatus::StartingUp,
                in_flight: 2,
            }],
        );
        assert_eq!(
            rendered,
            "{\"name\":\"backend\",\"supervisord\":\"127.0.0.1:9001\",\"held\":3,\"backends\":[\
             {\"index\":0,\"server\":\"127.0.0.1:8000\",\"program\":\"backend0\",\
             \"status\":\"starting up\",\"in_flight\":2}]}"
        );
    }
}
