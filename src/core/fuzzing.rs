//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), one per parser of outside input that
//! the module implements itself. They live here, not in `fuzz/`, so that a stable `cargo test`
//! replays every target's seeds (`fuzz/seeds/<target>/`) through the same code libFuzzer runs.
//!
//! Each body feeds its input to the parser and to what the module does with the parser's result,
//! and panics when an invariant stated in its doc comment does not hold: a panic is a finding.

use super::backend_status::Command;
use crate::config::control_uri::{last_segment, parse_selector, BackendSelector};
use crate::config::supervisord_address::{parse_credentials, parse_endpoint, Credentials};
use crate::policy::scaling::{
    decimal, parse_scale_up, ScalePolicy, MAX_TARGET_HUNDREDTHS, MIN_TICK_MS,
};
use crate::protocol::call_outcome::{command_succeeded, interpret_response};
use crate::protocol::http_exchange::{parse_response, HttpError, Progress};
use crate::protocol::process_state::{
    find_process_detail, names_like, parse_all_process_info, parse_process_info, process_named,
    running_for_s,
};
use crate::protocol::xmlrpc::{parse_method_response, MethodResponse, Value, MAX_DEPTH};
use crate::start::start_watch::fault_means_exit;
use crate::zone::liveness::parse_proc_stat;

/// A target's body: takes any bytes, panics on a finding.
pub type FuzzBody = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/<name>.rs` and seed folder) and body.
pub const TARGETS: &[(&str, FuzzBody)] = &[
    ("xmlrpc_reply", xmlrpc_reply),
    ("http_exchange", http_exchange),
    ("control_uri", control_uri),
    ("supervisord_address", supervisord_address),
    ("scale_up_args", scale_up_args),
    ("proc_stat", proc_stat),
];

/// The body of an XML-RPC method response, then what the module reads from a reply's value
/// (a process list, one process, the names for an error line) or fault.
///
/// Invariant: no panic, and a parsed value is never nested deeper than the parser's bound.
pub fn xmlrpc_reply(data: &[u8]) {
    match parse_method_response(data) {
        Ok(MethodResponse::Success(value)) => {
            assert!(nesting(&value) <= MAX_DEPTH + 1, "nesting above the bound");
            read_reply_value(&value);
        }
        Ok(MethodResponse::Fault(fault)) => {
            let _ = (fault.name(), fault.to_string(), fault_means_exit(&fault));
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

fn read_reply_value(value: &Value) {
    if let Ok(processes) = parse_all_process_info(value) {
        let _ = process_named(&processes, "backend0");
        let _ = process_named(&processes, "web:web_1");
        let _ = names_like("backend0", &processes);
    }
    let _ = running_for_s(value, "backend0");
    if let Ok(detail) = parse_process_info(value) {
        let _ = detail.reason();
    }
    if let Some(detail) = find_process_detail(value, "backend0") {
        let _ = detail.reason();
    }
}

/// Levels of values in `value`: 1 for a scalar.
fn nesting(value: &Value) -> usize {
    let deepest = match value {
        Value::Array(items) => items.iter().map(nesting).max(),
        Value::Struct(members) => members.iter().map(|(_, member)| nesting(member)).max(),
        _ => None,
    };
    1 + deepest.unwrap_or(0)
}

/// The largest response the fuzzed client accepts; the module's cap is larger, but a small
/// one lets short inputs reach the size checks.
const FUZZ_MAX_SIZE: usize = 4096;

/// supervisord's HTTP response as it arrives (status line, headers, a length-framed body; a
/// chunked one is refused), then the call's outcome from it.
///
/// Invariants: no panic; a complete response's body fits the size cap; and the verdict does not
/// depend on how the bytes were split into reads: a prefix of the input (cut in the middle, just
/// before and at the end of the head) is either still incomplete or gets the verdict of the
/// whole input (the same error, or the same status, type and body; only whether the connection
/// can be reused may differ, as bytes after the body make it unusable).
pub fn http_exchange(data: &[u8]) {
    let whole = parse_response(data, FUZZ_MAX_SIZE);
    if let Ok(Progress::Complete(response)) = &whole {
        assert!(response.body.len() <= FUZZ_MAX_SIZE, "body above the cap");
        let outcome = interpret_response(response);
        let _ = command_succeeded(Command::Start, &outcome);
        if let Err(error) = &outcome {
            let _ = error.to_string();
        }
    }
    if let Err(error) = &whole {
        let _ = error.to_string();
    }
    let head_end = data.windows(4).position(|window| window == b"\r\n\r\n");
    let cuts = [
        Some(data.len() / 2),
        head_end.map(|end| end + 3),
        head_end.map(|end| end + 4),
    ];
    for cut in cuts.into_iter().flatten().filter(|cut| *cut < data.len()) {
        match (parse_response(&data[..cut], FUZZ_MAX_SIZE), &whole) {
            (Ok(Progress::Incomplete), _) => {}
            (Err(part), Err(all)) => assert_eq!(&part, all, "prefix of {cut} bytes"),
            (Ok(Progress::Complete(part)), Ok(Progress::Complete(all))) => {
                assert_eq!(
                    (part.status, part.is_xml, &part.body),
                    (all.status, all.is_xml, &all.body),
                    "prefix of {cut} bytes"
                );
            }
            (part, all) => panic!("prefix of {cut} bytes: {part:?}, whole: {all:?}"),
        }
    }
    // A head that fills the cap is refused, never taken for an incomplete response.
    if head_end.is_none() && data.len() > FUZZ_MAX_SIZE {
        assert_eq!(whole, Err(HttpError::TooLarge(FUZZ_MAX_SIZE)));
    }
}

/// A control URI's path (`/_start/2`, `/_stop/any`); the first byte is the upstream's number of
/// servers.
///
/// Invariants: no panic; `Any` only for the segment `any`; an index only for a segment of
/// decimal digits whose value it is, and below the number of servers.
pub fn control_uri(data: &[u8]) {
    let Some((&count, path)) = data.split_first() else {
        return;
    };
    // 255 stands for the largest count, to reach the overflow checks.
    let backend_count = if count == u8::MAX {
        usize::MAX
    } else {
        usize::from(count)
    };
    let segment = last_segment(path);
    assert!(!segment.contains(&b'/') && !segment.contains(&b'?'));
    match parse_selector(path, backend_count) {
        Ok(BackendSelector::Any) => assert_eq!(segment, b"any"),
        Ok(BackendSelector::Index(index)) => {
            assert!(index < backend_count);
            assert!(segment.iter().all(u8::is_ascii_digit));
            let text = std::str::from_utf8(segment).expect("digits");
            assert_eq!(text.parse::<usize>().ok(), Some(index));
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// One argument of the `supervisord` directive, read both as the address and as the
/// credentials (as the module reads them: bytes as lossy UTF-8).
///
/// Invariants: no panic; an address reads back the same from how the module writes it in its
/// log lines and status pages; credentials are `user:password` split at the first colon, and
/// their `Debug` form is the same whatever the password.
pub fn supervisord_address(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_endpoint(&text) {
        Ok(endpoint) => {
            let written = endpoint.to_string();
            assert_eq!(
                parse_endpoint(&written),
                Ok(endpoint),
                "written as {written:?}"
            );
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    match parse_credentials(&text) {
        Ok(credentials) => {
            assert!(!credentials.user.is_empty() && !credentials.user.contains(':'));
            assert_eq!(
                format!("{}:{}", credentials.user, credentials.password),
                text
            );
            // Debug shows the user alone: the same text whatever the password.
            let without_password = Credentials {
                user: credentials.user.clone(),
                password: String::new(),
            };
            assert_eq!(format!("{credentials:?}"), format!("{without_password:?}"));
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// The arguments of `supervisord_scale_up`, one a line. nginx parses times itself; a stand-in
/// with nginx's units reads `window=`.
///
/// Invariants: no panic; an accepted rule has a target from 0.01 to 1,000,000 (written back
/// as a decimal, it reads the same) and a window of at least the shortest tick, and the tick
/// it implies is no shorter than the shortest and no longer than the window.
pub fn scale_up_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    let Ok(scale_up) = parse_scale_up(&words, time_ms) else {
        return;
    };
    let target = scale_up.target.hundredths();
    assert!((1..=MAX_TARGET_HUNDREDTHS).contains(&target));
    // Written back as a decimal, the target reads the same.
    let (name, _) = words
        .iter()
        .find_map(|word| word.split_once('=').filter(|(n, _)| *n != "window"))
        .unwrap();
    let again = parse_scale_up(&[&format!("{name}={}", decimal(target))], time_ms).unwrap();
    assert_eq!(again.target, scale_up.target);
    assert!(scale_up.window_ms >= MIN_TICK_MS);
    let policy = ScalePolicy {
        min_servers: 0,
        max_servers: 1,
        scale_up: Some(scale_up),
        idle_timeout_ms: None,
    };
    assert!(policy.tick_ms() >= MIN_TICK_MS && policy.tick_ms() <= scale_up.window_ms);
}

/// A time as nginx reads one (`500ms`, `30s`, `1h30m`; a bare number is seconds), in
/// milliseconds: for fuzzing only, as the module lets nginx parse times.
fn time_ms(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    if let Some(seconds) = text.strip_suffix("ms").and_then(|n| n.parse::<u64>().ok()) {
        return Some(seconds);
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for character in text.chars() {
        if let Some(digit) = character.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(digit))?,
            );
            continue;
        }
        let unit_ms: u64 = match character {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit_ms)?)?;
    }
    match number {
        Some(seconds) => total.checked_add(seconds.checked_mul(1_000)?),
        None => Some(total),
    }
}

/// `/proc/PID/stat` of a process that may be anyone's (a worker's pid reused): its command
/// name, in parentheses, is whatever that process chose.
///
/// Invariants: no panic; what is read comes from after the last `)`.
pub fn proc_stat(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(stat) = parse_proc_stat(&text) {
        let after_name = &text[text.rfind(')').expect("a name") + 1..];
        assert!(after_name.contains(stat.state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target's seeds, and the inputs of its past findings, through the target's body.
    #[test]
    fn replays_every_seed_of_every_target() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds");
        for (name, body) in TARGETS {
            let folder = format!("{seeds}/{name}");
            let entries = std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{folder}: {e}"));
            let mut replayed = 0;
            for entry in entries {
                let path = entry.unwrap().path();
                let input = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| body(&input));
                assert!(outcome.is_ok(), "{}", path.display());
                replayed += 1;
            }
            assert!(replayed > 0, "no seeds in {folder}");
        }
    }

    #[test]
    fn the_time_stand_in_reads_nginx_units() {
        assert_eq!(time_ms("500ms"), Some(500));
        assert_eq!(time_ms("30s"), Some(30_000));
        assert_eq!(time_ms("2"), Some(2_000));
        assert_eq!(time_ms("1m30s"), Some(90_000));
        assert_eq!(time_ms("1h"), Some(3_600_000));
        assert_eq!(time_ms(""), None);
        assert_eq!(time_ms("s"), None);
        assert_eq!(time_ms("1x"), None);
        assert_eq!(time_ms("99999999999999999999d"), None);
    }
}
