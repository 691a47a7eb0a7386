//! The harness's error-log check fails a test for real: a `[crit]` line nginx writes, or a worker
//! killed by a signal, fails it on drop or at `assert_clean_log`, unless the test allowed it.
//! (The pure checker is unit-tested in `src/error_log.rs`.)

use std::process::Command;

use nginx_tests::{eventually, Config, Nginx, Server};

/// nginx whose `/` proxies to a unix socket that does not exist: nginx's connect() logs
/// `[crit] ... connect() to unix:/... failed (2: No such file or directory)`.
fn missing_socket(name: &str) -> (Nginx, String) {
    let socket = std::env::temp_dir().join(format!("log-check-{name}-{}.sock", std::process::id()));
    let nginx = Nginx::start(
        name,
        &Config::new().workers(1).server(Server::new().location(
            "/",
            &format!("proxy_pass http://unix:{};", socket.display()),
        )),
    );
    (
        nginx,
        format!("connect() to unix:{} failed", socket.display()),
    )
}

fn provoke_crit(nginx: &Nginx, line: &str) {
    assert_eq!(nginx.get("/").status, 502);
    assert!(eventually(5, || nginx.error_log().contains(line)));
    assert!(
        nginx.error_log().contains("[crit]"),
        "{}",
        nginx.error_log()
    );
}

#[test]
#[should_panic(expected = "that the test did not allow")]
fn a_crit_line_fails_the_test_on_drop() {
    let (nginx, line) = missing_socket("crit-on-drop");
    provoke_crit(&nginx, &line);
}

#[test]
#[should_panic(expected = "that the test did not allow")]
fn assert_clean_log_fails_mid_test() {
    let (nginx, line) = missing_socket("crit-mid-test");
    provoke_crit(&nginx, &line);
    nginx.assert_clean_log();
}

#[test]
fn an_allowed_crit_line_passes() {
    let (nginx, line) = missing_socket("crit-allowed");
    nginx.allow_log_line(&line, "this test provokes it");
    provoke_crit(&nginx, &line);
    nginx.assert_clean_log();
}

/// Kills one worker with SIGKILL and waits for the master to log it.
fn kill_a_worker(nginx: &Nginx) {
    let worker = nginx.worker_pids()[0];
    let status = Command::new("kill")
        .args(["-9", &worker.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert!(eventually(5, || nginx.error_log().contains(&format!(
        "worker process {worker} exited on signal 9"
    ))));
}

fn plain(name: &str) -> Nginx {
    Nginx::start(
        name,
        &Config::new()
            .workers(2)
            .server(Server::new().location("/", "return 204;")),
    )
}

#[test]
#[should_panic(expected = "exited on signal 9")]
fn a_worker_killed_by_a_signal_fails_the_test() {
    let nginx = plain("killed-worker");
    kill_a_worker(&nginx);
}

#[test]
fn an_allowed_killed_worker_passes() {
    let nginx = plain("killed-allowed");
    nginx.allow_log_line(
        "exited on signal 9",
        "this test kills a worker with SIGKILL",
    );
    kill_a_worker(&nginx);
    assert_eq!(nginx.get("/").status, 204, "the master started another");
}
