//! The outcome of one call to supervisord, from transport to XML-RPC fault, as one error type
//! whose text goes into the error log (never with credentials: none are part of it).

use std::fmt;

use crate::backend_status::Command;
use crate::protocol::http_exchange::HttpResponse;
use crate::protocol::xmlrpc::{parse_method_response, Fault, MethodResponse, Value};

pub const FAULT_ALREADY_STARTED: i64 = 60;
pub const FAULT_NOT_RUNNING: i64 = 70;

#[derive(Clone, Debug, PartialEq)]
pub enum CallError {
    /// Connecting, sending or receiving failed (refused, reset, closed early...).
    Transport(String),
    /// The whole request went out, then the connection closed or reset before any byte of
    /// a reply: supervisord may have gone away while it handled the call (as when it
    /// restarts), so what became of the call is unknown.
    Cut(String),
    /// The workers may not open supervisord's UNIX socket (its permissions): not an outage
    /// that ends by itself, but a setting to fix. Carries the socket's address.
    NoAccess(String),
    TimedOut,
    Unauthorized,
    HttpStatus(u16),
    NotXml,
    Malformed(String),
    /// The reply announced `size` bytes, over the upstream's `supervisord_max_reply_size`
    /// (`limit`); reported once by the client (`reply_limit`), not by each caller.
    ReplyTooLarge {
        size: usize,
        limit: usize,
    },
    Fault(Fault),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(cause) | Self::Cut(cause) => f.write_str(cause),
            Self::NoAccess(socket) => write!(
                f,
                "connect to {socket} failed: permission denied; nginx's worker processes may not open supervisord's socket: give their user access with chown= or chmod= in supervisord's [unix_http_server] section (nginx -t names the user and what blocks it)"
            ),
            Self::TimedOut => f.write_str("timed out"),
            Self::Unauthorized => {
                f.write_str("401 unauthorized (check the user:pass of \"supervisord\")")
            }
            Self::HttpStatus(status) => write!(f, "HTTP status {status}"),
            Self::NotXml => {
                f.write_str("reply is not text/xml (is this supervisord's XML-RPC port?)")
            }
            Self::Malformed(what) => f.write_str(what),
            Self::ReplyTooLarge { size, limit } => write!(
                f,
                "reply of {size} bytes is larger than supervisord_max_reply_size ({limit} bytes)"
            ),
            Self::Fault(fault) => fault.fmt(f),
        }
    }
}

/// Turns a complete HTTP response into the call's value or error.
pub fn interpret_response(response: &HttpResponse) -> Result<Value, CallError> {
    match response.status {
        200 => {}
        401 => return Err(CallError::Unauthorized),
        status => return Err(CallError::HttpStatus(status)),
    }
    if !response.is_xml {
        return Err(CallError::NotXml);
    }
    match parse_method_response(&response.body) {
        Ok(MethodResponse::Success(value)) => Ok(value),
        Ok(MethodResponse::Fault(fault)) => Err(CallError::Fault(fault)),
        Err(error) => Err(CallError::Malformed(error.to_string())),
    }
}

/// Whether a start or stop call achieved what was asked. ALREADY_STARTED on start and
/// NOT_RUNNING on stop mean the program already is where the command wanted it.
pub fn command_succeeded(
    command: Command,
    result: &Result<Value, CallError>,
) -> Result<(), CallError> {
    match (command, result) {
        (_, Ok(_)) => Ok(()),
        (Command::Start, Err(CallError::Fault(fault))) if fault.code == FAULT_ALREADY_STARTED => {
            Ok(())
        }
        (Command::Stop, Err(CallError::Fault(fault))) if fault.code == FAULT_NOT_RUNNING => Ok(()),
        (_, Err(error)) => Err(error.clone()),
    }
}

/// Whether a start or stop found the program already where the command wanted it
/// (ALREADY_STARTED, NOT_RUNNING): someone else started or stopped it.
pub fn already_there(command: Command, result: &Result<Value, CallError>) -> bool {
    let code = match result {
        Err(CallError::Fault(fault)) => fault.code,
        _ => return false,
    };
    match command {
        Command::Start => code == FAULT_ALREADY_STARTED,
        Command::Stop => code == FAULT_NOT_RUNNING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(code: i64, string: &str) -> Result<Value, CallError> {
        Err(CallError::Fault(Fault {
            code,
            string: string.into(),
        }))
    }

    #[test]
    fn already_there_counts_as_success() {
        assert!(command_succeeded(Command::Start, &fault(60, "ALREADY_STARTED: backend0")).is_ok());
        assert!(command_succeeded(Command::Stop, &fault(70, "NOT_RUNNING: backend0")).is_ok());
        assert!(command_succeeded(Command::Start, &fault(70, "NOT_RUNNING")).is_err());
        assert!(command_succeeded(Command::Stop, &fault(60, "ALREADY_STARTED")).is_err());
        assert!(command_succeeded(Command::Start, &Ok(Value::Bool(true))).is_ok());
        assert!(already_there(
            Command::Start,
            &fault(60, "ALREADY_STARTED: backend0")
        ));
        assert!(already_there(
            Command::Stop,
            &fault(70, "NOT_RUNNING: backend0")
        ));
        assert!(!already_there(Command::Start, &Ok(Value::Bool(true))));
        assert!(!already_there(Command::Stop, &fault(60, "ALREADY_STARTED")));
    }

    #[test]
    fn errors_read_well_in_a_log_line() {
        assert_eq!(
            command_succeeded(Command::Start, &fault(50, "SPAWN_ERROR: crasher"))
                .unwrap_err()
                .to_string(),
            "fault 50 SPAWN_ERROR: crasher"
        );
        assert_eq!(CallError::TimedOut.to_string(), "timed out");
        let no_access = CallError::NoAccess("unix:/run/supervisor.sock".into()).to_string();
        assert!(no_access
            .starts_with("connect to unix:/run/supervisor.sock failed: permission denied; "));
        assert!(no_access.contains("chmod="), "{no_access}");
        assert!(CallError::Unauthorized
            .to_string()
            .starts_with("401 unauthorized"));
    }

    #[test]
    fn only_xml_answers_with_200_are_parsed() {
        let html = HttpResponse {
            status: 200,
            is_xml: false,
            reusable: true,
            body: b"<html>supervisor</html>".to_vec(),
        };
        assert_eq!(interpret_response(&html), Err(CallError::NotXml));
        let unauthorized = HttpResponse {
            status: 401,
            is_xml: false,
            reusable: false,
            body: Vec::new(),
        };
        assert_eq!(
            interpret_response(&unauthorized),
            Err(CallError::Unauthorized)
        );
    }
}
