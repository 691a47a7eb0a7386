//! `nginx -t` refuses every bad use of the directives with the file, the line and a reason,
//! and accepts every form the 2010 module documented.

use nginx_tests::config::line_of;
use nginx_tests::{Config, Prefix, Server, Upstream};

/// Runs `nginx -t` on `config`; returns (success, stderr, path of nginx.conf, its text).
fn check(name: &str, config: &Config) -> (bool, String, String, String) {
    let prefix = Prefix::new(name);
    let text = prefix.write_config(config, None);
    let output = prefix.test_conf();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        prefix.conf_path().display().to_string(),
        text,
    )
}

/// `nginx -t` refuses `config` with `reason` at the line that holds `line_with`.
fn assert_refused(name: &str, config: &Config, line_with: &str, reason: &str) {
    let (ok, stderr, path, text) = check(name, config);
    assert!(!ok, "nginx -t accepted:\n{text}\n{stderr}");
    let expected_place = format!("{path}:{}", line_of(&text, line_with));
    assert!(
        stderr.contains("[emerg]") && stderr.contains(reason) && stderr.contains(&expected_place),
        "expected `{reason}` at {expected_place}, got:\n{stderr}\n{text}"
    );
}

/// Upstream `backend` with two servers.
fn backend() -> Upstream {
    Upstream::new("backend")
        .server("127.0.0.1:8000")
        .server("127.0.0.1:8001")
}

/// Only `upstream`.
fn with(upstream: Upstream) -> Config {
    Config::new().workers(2).upstream(upstream)
}

/// `upstream` and a server on port 1 with one `location PATH { BODY }`.
fn with_location(upstream: Upstream, path: &str, body: &str) -> Config {
    with(upstream).server(Server::on(1).location(path, body))
}

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
        let config = with(
            backend()
                .directive(directive)
                .directive("supervisord_name web")
                .inherit_backend_status(),
        )
        .server(
            Server::on(1)
                .location("/", "proxy_pass http://backend;")
                .location("/_start/", "supervisord_start backend;")
                .location("/_stop/", "supervisord_stop backend;"),
        );
        let (ok, stderr, _, _) = check(name, &config);
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
        assert_refused(
            name,
            &with(backend().supervisord(address)),
            "supervisord ",
            &format!("invalid supervisord address: {reason}"),
        );
    }
}

#[test]
fn refuses_credentials_without_colon_and_never_prints_them() {
    let config = with(backend().supervisord("127.0.0.1:9001 adminS3cretPw"));
    assert_refused(
        "no-colon",
        &config,
        "supervisord ",
        "invalid supervisord credentials must be given as user:pass",
    );
    let (_, stderr, _, _) = check("no-colon-secret", &config);
    assert!(
        !stderr.contains("S3cretPw"),
        "credentials leaked:\n{stderr}"
    );
}

#[test]
fn refuses_credentials_with_none() {
    assert_refused(
        "none-creds",
        &with(backend().supervisord("none admin:super")),
        "supervisord none",
        "takes no credentials",
    );
}

/// Runs `nginx -t` on `config` and returns what the operator sees: stderr and the error log.
/// `-e` makes nginx log to the prefix's error log before it has read `error_log` (Debian's
/// build would use /var/log/nginx/error.log otherwise).
fn operator_output(name: &str, config: &Config) -> (bool, String, String) {
    let prefix = Prefix::new(name);
    prefix.write_config(config, None);
    let output = std::process::Command::new(nginx_tests::nginx_binary())
        .arg("-p")
        .arg(&prefix.dir)
        .arg("-e")
        .arg(prefix.dir.join("logs/error.log"))
        .arg("-c")
        .arg(prefix.conf_path())
        .arg("-t")
        .output()
        .expect("run nginx -t");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        prefix.error_log(),
    )
}

/// Swapped, URL-style or misspelt arguments: refused at their line with what is wrong, and
/// the password (any part of it) appears neither on stderr nor in the error log.
#[test]
fn never_prints_the_password_of_a_refused_supervisord_line() {
    for (name, arguments, reason) in [
        (
            "swapped",
            "adminUser:S3cretPw 127.0.0.1:9001",
            "invalid supervisord address: the text after the last \":\" is not a port number; \
             if this is user:pass, the address comes first",
        ),
        (
            "swapped-numeric",
            "adminUser:4242 127.0.0.1:9001",
            "invalid supervisord credentials look like an address: the address comes first",
        ),
        (
            "swapped-unix",
            "adminUser:S3cretPw unix:/run/supervisor.sock",
            "invalid supervisord address: the text after the last \":\" is not a port number",
        ),
        (
            "url",
            "http://adminUser:S3cretPw@127.0.0.1:9001",
            "invalid supervisord address: a URL or \"user:pass@\" is not an address",
        ),
        (
            "url-unix",
            "unix://adminUser:S3cretPw@/run/supervisor.sock",
            "invalid supervisord address: a URL or \"user:pass@\" is not an address",
        ),
        (
            "at-sign",
            "adminUser:S3cretPw@127.0.0.1:9001",
            "invalid supervisord address: a URL or \"user:pass@\" is not an address",
        ),
        (
            // Not "no-colon": that test runs at the same time, and a prefix is named after it.
            "colon-missing",
            "127.0.0.1:9001 S3cretPw",
            "invalid supervisord credentials must be given as user:pass",
        ),
    ] {
        let config = with(backend().supervisord(arguments));
        assert_refused(name, &config, "supervisord ", reason);
        let (ok, stderr, log) = operator_output(&format!("{name}-log"), &config);
        assert!(!ok);
        assert!(log.contains(reason), "error log misses the reason:\n{log}");
        for secret in ["S3cretPw", "4242"] {
            assert!(
                !stderr.contains(secret) && !log.contains(secret),
                "{name}: the password was printed:\n{stderr}\n{log}"
            );
        }
    }
}

/// Two server lines with one address would follow one status: refused, naming both servers and
/// the upstream block's place (servers have no line of their own).
#[test]
fn refuses_two_servers_with_one_address() {
    for (name, second) in [
        ("dup-server", "127.0.0.1:8000"),
        ("dup-server-params", "127.0.0.1:8000 backup"),
        ("dup-server-localhost", "localhost:8000"),
    ] {
        let upstream = Upstream::new("backend")
            .server("127.0.0.1:8000")
            .server("127.0.0.1:8001")
            .server(second)
            .supervisord("none");
        let second_name = second.split(' ').next().unwrap();
        assert_refused(
            name,
            &with(upstream),
            "upstream backend",
            &format!(
                "servers \"127.0.0.1:8000\" and \"{second_name}\" of upstream \"backend\" in "
            ),
        );
    }
    // Plain upstreams keep nginx's own rules.
    let plain = Upstream::new("plain")
        .server("127.0.0.1:8000")
        .server("127.0.0.1:8000");
    let (ok, stderr, _, _) = check("dup-server-plain", &with(plain));
    assert!(ok, "{stderr}");
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
        let upstream = if first.starts_with("supervisord ") {
            backend()
        } else {
            backend().supervisord("none")
        };
        let directive = second.split(' ').next().unwrap().trim_end_matches(';');
        assert_refused(
            name,
            &with(upstream.raw(first).raw(second)),
            second,
            &format!("\"{directive}\" directive is duplicate"),
        );
    }
    assert_refused(
        "dup-start",
        &with_location(
            backend().supervisord("none"),
            "/_start/",
            "supervisord_start backend;\nsupervisord_start backend; # twice",
        ),
        "# twice",
        "\"supervisord_start\" directive is duplicate",
    );
}

#[test]
fn refuses_start_and_stop_in_one_location() {
    assert_refused(
        "start-and-stop",
        &with_location(
            backend().supervisord("none"),
            "/_ctl/",
            "supervisord_start backend;\nsupervisord_stop backend;",
        ),
        "supervisord_stop backend",
        "\"supervisord_start\" and \"supervisord_stop\" cannot be used in one location",
    );
}

#[test]
fn refuses_an_unknown_upstream() {
    assert_refused(
        "unknown-upstream",
        &with_location(
            backend().supervisord("none"),
            "/_start/",
            "supervisord_start nosuch;",
        ),
        "supervisord_start nosuch",
        "\"supervisord_start\" names an unknown upstream \"nosuch\"",
    );
}

#[test]
fn refuses_an_upstream_without_supervisord() {
    let plain = Upstream::new("plain")
        .server("127.0.0.1:8000")
        .server("127.0.0.1:8001");
    assert_refused(
        "no-supervisord",
        &with_location(plain, "/_stop/", "supervisord_stop plain;"),
        "supervisord_stop plain",
        "\"supervisord_stop\" has no \"supervisord\" directive in upstream \"plain\"",
    );
}

#[test]
fn refuses_upstream_options_without_supervisord() {
    assert_refused(
        "name-alone",
        &with(backend().directive("supervisord_name web")),
        "upstream backend",
        "\"supervisord_name\" needs \"supervisord\" in upstream \"backend\"",
    );
}

#[test]
fn refuses_directives_in_the_wrong_context() {
    for (name, config, needle, directive) in [
        (
            "supervisord-in-server",
            Config::new()
                .workers(2)
                .server(Server::on(1).directive("supervisord none")),
            "supervisord none",
            "supervisord",
        ),
        (
            "start-in-upstream",
            with(
                backend()
                    .supervisord("none")
                    .directive("supervisord_start backend"),
            ),
            "supervisord_start",
            "supervisord_start",
        ),
        (
            "inherit-in-location",
            Config::new()
                .workers(2)
                .server(Server::on(1).location("/", "supervisord_inherit_backend_status;")),
            "supervisord_inherit",
            "supervisord_inherit_backend_status",
        ),
    ] {
        assert_refused(
            name,
            &config,
            needle,
            &format!("\"{directive}\" directive is not allowed here"),
        );
    }
}

#[test]
fn refuses_wrong_argument_counts() {
    assert_refused(
        "no-args",
        &with(backend().directive("supervisord")),
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
        (
            "bad-reply-size",
            "supervisord_max_reply_size lots;",
            "invalid supervisord_max_reply_size \"lots\": expected a size of at least 1k, such as 16m",
        ),
        (
            "tiny-reply-size",
            "supervisord_max_reply_size 512;",
            "invalid supervisord_max_reply_size \"512\"",
        ),
        (
            "dup-reply-size",
            "supervisord_max_reply_size 1m; supervisord_max_reply_size 2m;",
            "\"supervisord_max_reply_size\" directive is duplicate",
        ),
    ] {
        let config = with(backend().supervisord("127.0.0.1:9001").directive(line));
        assert_refused(name, &config, line, reason);
    }
    assert_refused(
        "interval-alone",
        &with(backend().sync_interval("1s")),
        "upstream backend",
        "\"supervisord_sync_interval\" needs \"supervisord\" in upstream \"backend\"",
    );
    let config = with_location(
        backend()
            .supervisord("unix:/run/s.sock")
            .directive("supervisord_timeout 500ms")
            .sync_interval("off")
            .directive("supervisord_hold_limit 10")
            .directive("supervisord_hold_timeout 5s")
            .directive("supervisord_max_reply_size 16m"),
        "= /s",
        "supervisord_status;",
    );
    let (ok, stderr, _, _) = check("timeouts-ok", &config);
    assert!(ok, "{stderr}");
}

#[test]
fn refuses_an_unresolvable_supervisord_host() {
    assert_refused(
        "unresolvable",
        &with(backend().supervisord("no-such-host.invalid:9001")),
        "supervisord no-such",
        "invalid supervisord address: host not found",
    );
}

#[test]
fn reads_times_as_every_nginx_directive_does() {
    for (name, value) in [
        ("time-combined", "1m30s"),
        ("time-days", "1d"),
        ("time-hours", "2h"),
        ("time-bare-seconds", "45"),
        ("time-ms", "250ms"),
        ("time-spaced", "\"1h 30m\""),
    ] {
        for directive in [
            "supervisord_timeout",
            "supervisord_hold_timeout",
            "supervisord_sync_interval",
        ] {
            let config = with(
                backend()
                    .supervisord("127.0.0.1:9001")
                    .directive(format!("{directive} {value}")),
            );
            let (ok, stderr, _, text) = check(name, &config);
            assert!(ok, "{directive} {value} refused:\n{stderr}\n{text}");
        }
    }
    for (name, value) in [("time-unit", "5x"), ("time-order", "30s1m")] {
        let line = format!("supervisord_hold_timeout {value};");
        assert_refused(
            name,
            &with(
                backend()
                    .supervisord("127.0.0.1:9001")
                    .directive(&line[..line.len() - 1]),
            ),
            &line,
            &format!("invalid supervisord_hold_timeout \"{value}\""),
        );
    }
}

#[test]
fn refuses_scaling_mistakes() {
    let upstream = |directives: &[&str]| {
        Upstream::new("backend")
            .server("127.0.0.1:8001")
            .server("127.0.0.1:8002")
            .supervisord("unix:/nonexistent.sock")
            .directives(directives)
    };
    let config = |directives: &[&str]| {
        Config::new()
            .upstream(upstream(directives))
            .server(Server::on(8080).location("/", "proxy_pass http://backend;"))
    };
    let cases: [(&[&str], &str, &str); 7] = [
        (
            &["supervisord_min_servers 3"],
            "upstream backend",
            "supervisord_min_servers 3 is more than the 2 servers of upstream \"backend\"",
        ),
        (
            &["supervisord_min_servers 2", "supervisord_max_servers 1"],
            "upstream backend",
            "supervisord_min_servers 2 is more than supervisord_max_servers 1",
        ),
        (
            &["supervisord_scale_up window=5s"],
            "supervisord_scale_up",
            "supervisord_scale_up: in_flight= or rate= is required",
        ),
        (
            &["supervisord_scale_up in_flight=0"],
            "supervisord_scale_up",
            "supervisord_scale_up: invalid in_flight \"0\"",
        ),
        (
            &["supervisord_scale_up in_flight=1.005"],
            "supervisord_scale_up",
            "supervisord_scale_up: invalid in_flight \"1.005\": expected a number from 0.01 to 1000000, with at most two decimals",
        ),
        (
            &["supervisord_scale_up rate=5 window=10ms"],
            "supervisord_scale_up",
            "invalid window \"10ms\": expected a time of 100ms or more",
        ),
        (
            &["supervisord_idle_timeout soon"],
            "supervisord_idle_timeout",
            "invalid supervisord_idle_timeout \"soon\"",
        ),
    ];
    for (directives, line_with, reason) in cases {
        assert_refused("scaling-mistake", &config(directives), line_with, reason);
    }
    // Every documented form is accepted.
    let (ok, stderr, _, text) = check(
        "scaling-forms",
        &config(&[
            "supervisord_min_servers 1",
            "supervisord_max_servers 2",
            "supervisord_scale_up rate=50 window=1m30s",
            "supervisord_idle_timeout 10m",
        ]),
    );
    assert!(ok, "{text}\n{stderr}");
    let (ok, stderr, _, text) = check(
        "scaling-off",
        &config(&[
            "supervisord_scale_up in_flight=4",
            "supervisord_idle_timeout off",
        ]),
    );
    assert!(ok, "{text}\n{stderr}");
}

#[test]
fn refuses_host_settings_that_differ_between_upstreams_of_one_supervisord() {
    let first = backend()
        .supervisord("127.0.0.1:9001")
        .directive("supervisord_timeout 5s");
    let second = |extra: &str| {
        Upstream::new("other")
            .server("127.0.0.1:8002")
            .supervisord(format!("127.0.0.1:9001{extra}"))
    };
    // One supervisord, two upstreams: its call time-out is one setting.
    assert_refused(
        "host-settings",
        &with(first.clone()).upstream(second("")),
        "upstream other",
        "\"supervisord_timeout\" differs between upstream \"backend\" (5000ms, in ",
    );
    let (ok, stderr, _, _) = check(
        "host-settings-text",
        &with(first.clone()).upstream(second("")),
    );
    assert!(!ok);
    assert!(
        stderr.contains("and upstream \"other\" (30000ms, in ",)
            && stderr.contains("which use the same supervisord at 127.0.0.1:9001"),
        "{stderr}"
    );
    // Other credentials are another host (another user of the same supervisord).
    let (ok, stderr, _, text) = check(
        "host-settings-users",
        &with(first.clone()).upstream(second(" admin:secret")),
    );
    assert!(ok, "{text}\n{stderr}");
    // Alike, they are accepted.
    let alike = second("").directive("supervisord_timeout 5s");
    let (ok, stderr, _, text) = check("host-settings-alike", &with(first).upstream(alike));
    assert!(ok, "{text}\n{stderr}");
}

/// Upstream `app` over two loopback "hosts" (ports 8000 and 8001 on 127.0.0.2, 8000 on
/// 127.0.0.3), with `supervisord` lines `lines`.
fn two_hosts(lines: &[&str]) -> Config {
    let mut upstream = Upstream::new("app")
        .server("127.0.0.2:8000")
        .server("127.0.0.2:8001")
        .server("127.0.0.3:8000");
    for line in lines {
        upstream = upstream.raw(*line);
    }
    with(upstream)
}

#[test]
fn accepts_one_supervisord_per_host() {
    for (name, lines) in [
        (
            "hosts-ok",
            vec![
                "supervisord 127.0.0.2:9001 admin:secret;",
                "supervisord 127.0.0.3:9001 admin:secret;",
            ],
        ),
        (
            "hosts-ok-servers",
            vec![
                "supervisord 127.0.0.2:9001;",
                "supervisord unix:/run/supervisor.sock servers=127.0.0.3;",
            ],
        ),
    ] {
        let (ok, stderr, _, text) = check(name, &two_hosts(&lines));
        assert!(ok, "{stderr}\n{text}");
    }
}

#[test]
fn refuses_servers_without_exactly_one_supervisord() {
    assert_refused(
        "hosts-unclaimed",
        &two_hosts(&["supervisord 127.0.0.2:9001;", "supervisord 127.0.0.4:9001;"]),
        "upstream app",
        "server \"127.0.0.3:8000\" of upstream \"app\"",
    );
    assert_refused(
        "hosts-twice",
        &two_hosts(&[
            "supervisord 127.0.0.2:9001;",
            "supervisord 127.0.0.9:9001 servers=127.0.0.2;",
            "supervisord 127.0.0.3:9001;",
        ]),
        "upstream app",
        "is managed by both \"supervisord 127.0.0.2:9001\" and \"supervisord 127.0.0.9:9001\"",
    );
    assert_refused(
        "hosts-same",
        &two_hosts(&[
            "supervisord 127.0.0.2:9001;",
            "supervisord 127.0.0.2:9001 admin:secret;",
        ]),
        "upstream app",
        "name the same host",
    );
    assert_refused(
        "hosts-socket",
        &two_hosts(&[
            "supervisord 127.0.0.2:9001;",
            "supervisord unix:/run/supervisor.sock;",
        ]),
        "upstream app",
        "a UNIX socket needs \"servers=HOST\"",
    );
    assert_refused(
        "hosts-none",
        &two_hosts(&["supervisord 127.0.0.2:9001;", "supervisord none; # mixed"]),
        "# mixed",
        "cannot be mixed with supervisord addresses",
    );
}
