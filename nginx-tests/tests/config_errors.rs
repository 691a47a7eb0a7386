//! `nginx -t` refuses every bad use of the directives with the file, the line and a reason,
//! and accepts every form the 2010 module documented.

use nginx_tests::Prefix;

/// Runs `nginx -t` on `http_body`; returns (success, stderr, path of nginx.conf).
fn check(name: &str, http_body: &str) -> (bool, String, String) {
    let prefix = Prefix::new(name);
    prefix.write_conf(2, http_body);
    let output = prefix.test_conf();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        prefix.conf_path().display().to_string(),
    )
}

/// The line of `nginx.conf` that contains `needle` (1-based), as nginx reports it.
fn line_of(http_body: &str, needle: &str) -> usize {
    // The harness writes 13 lines before the http body starts.
    let offset = 13;
    offset
        + http_body
            .lines()
            .position(|line| line.contains(needle))
            .expect("needle in config")
        + 1
}

fn assert_refused(name: &str, http_body: &str, line_with: &str, reason: &str) {
    let (ok, stderr, path) = check(name, http_body);
    assert!(!ok, "nginx -t accepted:\n{http_body}\n{stderr}");
    let expected_place = format!("{path}:{}", line_of(http_body, line_with));
    assert!(
        stderr.contains("[emerg]") && stderr.contains(reason) && stderr.contains(&expected_place),
        "expected `{reason}` at {expected_place}, got:\n{stderr}"
    );
}

const SERVERS: &str = "server 127.0.0.1:8000;\nserver 127.0.0.1:8001;\n";

#[test]
fn accepts_every_documented_form() {
    for (name, directive) in [
        ("ok-none", "supervisord none;"),
        ("ok-tcp", "supervisord 127.0.0.1:9001;"),
        ("ok-tcp-auth", "supervisord 127.0.0.1:9001 admin:super;"),
        ("ok-host", "supervisord localhost:9001 admin:super;"),
        ("ok-unix", "supervisord unix:/var/run/supervisor.sock;"),
        (
            "ok-unix-auth",
            "supervisord unix:/var/run/supervisor.sock admin:super;",
        ),
    ] {
        let body = format!(
            "upstream backend {{\n{SERVERS}{directive}\nsupervisord_name web;\n\
             supervisord_inherit_backend_status;\n}}\n\
             server {{ listen 127.0.0.1:1; location / {{ proxy_pass http://backend; }}\n\
             location /_start/ {{ supervisord_start backend; }}\n\
             location /_stop/ {{ supervisord_stop backend; }} }}"
        );
        let (ok, stderr, _) = check(name, &body);
        assert!(ok, "{directive} refused:\n{stderr}");
        assert!(stderr.contains("test is successful"), "{stderr}");
    }
}

#[test]
fn refuses_a_bad_address() {
    for (name, address, reason) in [
        ("no-port", "127.0.0.1", "no port in address"),
        ("bad-port", "127.0.0.1:99999", "invalid port"),
        ("zero-port", "localhost:0", "invalid port"),
        (
            "relative-unix",
            "unix:supervisor.sock",
            "the path of a unix socket must be absolute",
        ),
        ("empty-host", ":9001", "no host in address"),
    ] {
        let body = format!("upstream backend {{\n{SERVERS}supervisord {address};\n}}");
        assert_refused(
            name,
            &body,
            "supervisord ",
            &format!("invalid supervisord address \"{address}\": {reason}"),
        );
    }
}

#[test]
fn refuses_credentials_without_colon_and_never_prints_them() {
    let body =
        format!("upstream backend {{\n{SERVERS}supervisord 127.0.0.1:9001 adminS3cretPw;\n}}");
    assert_refused(
        "no-colon",
        &body,
        "supervisord ",
        "invalid supervisord credentials must be given as user:pass",
    );
    let (_, stderr, _) = check("no-colon-secret", &body);
    assert!(
        !stderr.contains("S3cretPw"),
        "credentials leaked:\n{stderr}"
    );
}

#[test]
fn refuses_credentials_with_none() {
    let body = format!("upstream backend {{\n{SERVERS}supervisord none admin:super;\n}}");
    assert_refused(
        "none-creds",
        &body,
        "supervisord none",
        "takes no credentials",
    );
}

#[test]
fn refuses_duplicate_directives() {
    for (name, first, second) in [
        (
            "dup-supervisord",
            "supervisord none;",
            "supervisord 127.0.0.1:9001;",
        ),
        ("dup-name", "supervisord_name a;", "supervisord_name b;"),
        (
            "dup-inherit",
            "supervisord_inherit_backend_status;",
            "supervisord_inherit_backend_status; # again",
        ),
    ] {
        let extra = if first.starts_with("supervisord ") {
            ""
        } else {
            "supervisord none;\n"
        };
        let body = format!("upstream backend {{\n{SERVERS}{extra}{first}\n{second}\n}}");
        let directive = second.split(' ').next().unwrap().trim_end_matches(';');
        assert_refused(
            name,
            &body,
            second,
            &format!("\"{directive}\" directive is duplicate"),
        );
    }
    let body = format!(
        "upstream backend {{\n{SERVERS}supervisord none;\n}}\n\
         server {{ listen 127.0.0.1:1;\nlocation /_start/ {{ supervisord_start backend;\n\
         supervisord_start backend; # twice\n}} }}"
    );
    assert_refused(
        "dup-start",
        &body,
        "# twice",
        "\"supervisord_start\" directive is duplicate",
    );
}

#[test]
fn refuses_start_and_stop_in_one_location() {
    let body = format!(
        "upstream backend {{\n{SERVERS}supervisord none;\n}}\n\
         server {{ listen 127.0.0.1:1;\nlocation /_ctl/ {{ supervisord_start backend;\n\
         supervisord_stop backend;\n}} }}"
    );
    assert_refused(
        "start-and-stop",
        &body,
        "supervisord_stop backend",
        "\"supervisord_start\" and \"supervisord_stop\" cannot be used in one location",
    );
}

#[test]
fn refuses_an_unknown_upstream() {
    let body = format!(
        "upstream backend {{\n{SERVERS}supervisord none;\n}}\n\
         server {{ listen 127.0.0.1:1;\nlocation /_start/ {{ supervisord_start nosuch; }}\n}}"
    );
    assert_refused(
        "unknown-upstream",
        &body,
        "supervisord_start nosuch",
        "\"supervisord_start\" names an unknown upstream \"nosuch\"",
    );
}

#[test]
fn refuses_an_upstream_without_supervisord() {
    let body = format!(
        "upstream plain {{\n{SERVERS}}}\n\
         server {{ listen 127.0.0.1:1;\nlocation /_stop/ {{ supervisord_stop plain; }}\n}}"
    );
    assert_refused(
        "no-supervisord",
        &body,
        "supervisord_stop plain",
        "\"supervisord_stop\" has no \"supervisord\" directive in upstream \"plain\"",
    );
}

#[test]
fn refuses_upstream_options_without_supervisord() {
    let body = format!("upstream backend {{\n{SERVERS}supervisord_name web;\n}}");
    assert_refused(
        "name-alone",
        &body,
        "upstream backend",
        "\"supervisord_name\" needs \"supervisord\" in upstream \"backend\"",
    );
}

#[test]
fn refuses_directives_in_the_wrong_context() {
    for (name, body, needle, directive) in [
        (
            "supervisord-in-server",
            "server { listen 127.0.0.1:1;\nsupervisord none;\n}".to_string(),
            "supervisord none",
            "supervisord",
        ),
        (
            "start-in-upstream",
            format!(
                "upstream backend {{\n{SERVERS}supervisord none;\nsupervisord_start backend;\n}}"
            ),
            "supervisord_start",
            "supervisord_start",
        ),
        (
            "inherit-in-location",
            "server { listen 127.0.0.1:1;\nlocation / {\nsupervisord_inherit_backend_status;\n} }"
                .to_string(),
            "supervisord_inherit",
            "supervisord_inherit_backend_status",
        ),
    ] {
        assert_refused(
            name,
            &body,
            needle,
            &format!("\"{directive}\" directive is not allowed here"),
        );
    }
}

#[test]
fn refuses_wrong_argument_counts() {
    let body = format!("upstream backend {{\n{SERVERS}supervisord;\n}}");
    assert_refused(
        "no-args",
        &body,
        "supervisord;",
        "invalid number of arguments in \"supervisord\" directive",
    );
}

#[test]
fn refuses_bad_timeouts_and_intervals() {
    for (name, line, reason) in [
        (
            "bad-timeout",
            "supervisord_timeout soon;",
            "invalid supervisord_timeout \"soon\"",
        ),
        (
            "zero-timeout",
            "supervisord_timeout 0s;",
            "invalid supervisord_timeout \"0s\"",
        ),
        (
            "bad-hold-limit",
            "supervisord_hold_limit many;",
            "invalid supervisord_hold_limit \"many\"",
        ),
        (
            "bad-hold-timeout",
            "supervisord_hold_timeout 1.5s;",
            "invalid supervisord_hold_timeout \"1.5s\"",
        ),
        (
            "bad-interval",
            "supervisord_sync_interval -1;",
            "invalid supervisord_sync_interval \"-1\"",
        ),
    ] {
        let body = format!("upstream backend {{\n{SERVERS}supervisord 127.0.0.1:9001;\n{line}\n}}");
        assert_refused(name, &body, line, reason);
    }
    let body = format!("upstream backend {{\n{SERVERS}supervisord_sync_interval 1s;\n}}");
    assert_refused(
        "interval-alone",
        &body,
        "upstream backend",
        "\"supervisord_sync_interval\" needs \"supervisord\" in upstream \"backend\"",
    );
    let body = format!(
        "upstream backend {{\n{SERVERS}supervisord unix:/run/s.sock;\n\
         supervisord_timeout 500ms;\nsupervisord_sync_interval off;\n\
         supervisord_hold_limit 10;\nsupervisord_hold_timeout 5s;\n}}\n\
         server {{ listen 127.0.0.1:1; location = /s {{ supervisord_status; }} }}"
    );
    let (ok, stderr, _) = check("timeouts-ok", &body);
    assert!(ok, "{stderr}");
}

#[test]
fn refuses_an_unresolvable_supervisord_host() {
    let body = format!("upstream backend {{\n{SERVERS}supervisord no-such-host.invalid:9001;\n}}");
    assert_refused(
        "unresolvable",
        &body,
        "supervisord no-such",
        "invalid supervisord address \"no-such-host.invalid:9001\": host not found",
    );
}
