//! The parsers against byte-exact captures of a real supervisord 4.2.5 (see captures/README.md).

use crate::backend_status::Command;
use crate::protocol::call_outcome::{command_succeeded, interpret_response, CallError};
use crate::protocol::http_exchange::{parse_response, HttpResponse, Progress};
use crate::protocol::process_state::{parse_all_process_info, ProcessState};
use crate::protocol::xmlrpc::Value;

/// The RESPONSE blocks of a capture file.
fn responses(file: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/protocol/captures/{file}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut blocks = Vec::new();
    let mut rest = &raw[..];
    while let Some(start) = rest.windows(4).position(|w| w == b"=== ") {
        let line_end = start + rest[start..].iter().position(|b| *b == b'\n').unwrap();
        let header = String::from_utf8_lossy(&rest[start..line_end]).into_owned();
        let length: usize = header
            .split('(')
            .nth(1)
            .and_then(|tail| tail.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad block header {header:?}"));
        let body = &rest[line_end + 1..line_end + 1 + length];
        if header.starts_with("=== RESPONSE") {
            blocks.push(body.to_vec());
        }
        rest = &rest[line_end + 1 + length..];
    }
    blocks
}

fn only_response(file: &str) -> HttpResponse {
    let blocks = responses(file);
    assert_eq!(blocks.len(), 1, "{file}");
    match parse_response(&blocks[0], 1 << 20).unwrap() {
        Progress::Complete(response) => response,
        Progress::Incomplete => panic!("{file}: incomplete"),
    }
}

fn result_of(file: &str) -> Result<Value, CallError> {
    interpret_response(&only_response(file))
}

fn fault_code(file: &str) -> i64 {
    match result_of(file) {
        Err(CallError::Fault(fault)) => fault.code,
        other => panic!("{file}: expected a fault, got {other:?}"),
    }
}

#[test]
fn successful_calls() {
    let state = result_of("001_getState.txt").unwrap();
    assert_eq!(
        state.member("statename"),
        Some(&Value::Str("RUNNING".into()))
    );
    assert_eq!(
        result_of("005_startProcess_backend0_wait_default.txt"),
        Ok(Value::Bool(true))
    );
    let response = only_response("005_startProcess_backend0_wait_default.txt");
    assert!(
        response.reusable,
        "supervisord keeps HTTP/1.1 connections open"
    );
}

#[test]
fn faults_and_what_counts_as_success() {
    assert_eq!(fault_code("007_startProcess_ALREADY_STARTED.txt"), 60);
    assert_eq!(fault_code("010_stopProcess_NOT_RUNNING.txt"), 70);
    assert_eq!(fault_code("020_startProcess_BAD_NAME.txt"), 10);
    assert_eq!(
        fault_code("023_startProcess_NO_FILE_command_missing.txt"),
        20
    );
    assert_eq!(
        fault_code("026_startProcess_SPAWN_ERROR_exits_immediately.txt"),
        50
    );
    assert_eq!(
        fault_code("129_getState_during_shutdown_SHUTDOWN_STATE.txt"),
        6
    );
    assert!(command_succeeded(
        Command::Start,
        &result_of("007_startProcess_ALREADY_STARTED.txt")
    )
    .is_ok());
    assert!(
        command_succeeded(Command::Stop, &result_of("010_stopProcess_NOT_RUNNING.txt")).is_ok()
    );
    let spawn_error = command_succeeded(
        Command::Start,
        &result_of("026_startProcess_SPAWN_ERROR_exits_immediately.txt"),
    )
    .unwrap_err();
    assert!(
        spawn_error.to_string().starts_with("fault 50 SPAWN_ERROR"),
        "{spawn_error}"
    );
}

#[test]
fn all_process_info_and_group_names() {
    let all = parse_all_process_info(&result_of("053_getAllProcessInfo.txt").unwrap()).unwrap();
    assert!(all.len() > 5);
    assert!(all.iter().any(|p| p.full_name == "backend0"));
    assert!(
        all.iter().any(|p| p.full_name.contains(':')),
        "group members carry group:name"
    );
    let member = result_of("063_getProcessInfo_numprocs_member.txt").unwrap();
    assert!(member.member("group").is_some());
    let state = member.member("state").and_then(Value::as_int).unwrap();
    assert_ne!(ProcessState::from_code(state), ProcessState::Unknown);
}

#[test]
fn multicall_results_parse() {
    assert!(matches!(
        result_of("071_multicall_mixed.txt"),
        Ok(Value::Array(_))
    ));
}

#[test]
fn non_rpc_answers_are_errors() {
    assert_eq!(
        result_of("081_malformed_xml_truncated.txt"),
        Err(CallError::HttpStatus(400))
    );
    assert_eq!(result_of("088_POST_other_path.txt"), Err(CallError::NotXml));
    assert_eq!(
        result_of("092_auth_wrong_password.txt"),
        Err(CallError::Unauthorized)
    );
    assert!(
        !only_response("092_auth_wrong_password.txt").reusable,
        "reconnect after 401"
    );
}

#[test]
fn a_miscounted_content_length_never_yields_a_reusable_connection() {
    let blocks = responses("123_raw_deferred_nonascii_content_length_mismatch.txt");
    let raw = blocks.concat();
    match parse_response(&raw, 1 << 20) {
        Ok(Progress::Complete(response)) => {
            assert!(!response.reusable || interpret_response(&response).is_err());
        }
        Ok(Progress::Incomplete) => {}
        Err(_) => {}
    }
}
