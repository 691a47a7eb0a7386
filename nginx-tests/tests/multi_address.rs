//! A `server` whose name resolves to several addresses: `localhost` -> ::1 and 127.0.0.1 (as in
//! Debian's default /etc/hosts), with the program listening on 127.0.0.1 only. The backend is
//! ready as soon as any address accepts, and a refused address does not stop it: nginx's own
//! max_fails/fail_timeout keep requests off ::1, as plain nginx would.
//!
//! This machine's /etc/hosts may map `localhost` to 127.0.0.1 alone, so nginx runs in a
//! private mount namespace whose /etc/hosts maps it to both (checked with `getent` first).

use std::time::{Duration, Instant};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{
    command_with_hosts, free_port, request, scaled, Config, Nginx, Server, Upstream,
};

const HOSTS: &str = "::1 localhost\n127.0.0.1 localhost\n";

#[test]
fn a_backend_on_one_of_its_addresses_is_ready_at_once_and_never_stopped() {
    // The namespace resolves localhost to ::1 first, then 127.0.0.1.
    let hosts = std::env::temp_dir().join(format!("multi-address-hosts-{}", std::process::id()));
    std::fs::write(&hosts, HOSTS).unwrap();
    let resolved = command_with_hosts(std::path::Path::new("getent"), Some(&hosts))
        .args(["ahosts", "localhost"])
        .output()
        .expect("run getent in a mount namespace (needs root)");
    let _ = std::fs::remove_file(&hosts);
    let resolved = String::from_utf8_lossy(&resolved.stdout).into_owned();
    let addresses: Vec<&str> = resolved
        .lines()
        .filter(|line| line.contains("STREAM"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(addresses, ["::1", "127.0.0.1"], "{resolved}");

    let port = free_port();
    // test-backend binds 127.0.0.1 only.
    let supervisord = Supervisord::start(
        "multi-address",
        &[Program::backend("backend0", port, 1)],
        "",
    );
    let nginx = Nginx::start_with_hosts(
        "multi-address",
        &Config::new()
            .workers(2)
            .upstream(
                Upstream::new("backend")
                    .server(format!("localhost:{port}"))
                    .supervisord(supervisord.address())
                    .directive("supervisord_timeout 20s"),
            )
            .server(
                Server::new()
                    .reuseport()
                    .location("/", "proxy_pass http://backend;")
                    .location("= /_status", "supervisord_status;"),
            ),
        HOSTS,
    );
    let started = Instant::now();
    let first = nginx.get("/");
    let took = started.elapsed();
    assert_eq!(first.status, 200, "{first:?}");
    // Ready when 127.0.0.1 accepted, not after supervisord_timeout (20 s) of trying ::1.
    assert!(took < scaled(Duration::from_secs(5)), "{took:?}");

    let threads: Vec<_> = (0..4)
        .map(|_| {
            let port = nginx.port;
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| request(port, "GET", "/"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        for response in thread.join().unwrap() {
            assert_eq!(response.status, 200, "{response:?}");
            assert_eq!(response.body.trim(), format!("backend {port}"));
        }
    }
    let status = nginx.supervisord_status("/_status");
    assert_eq!(status.upstream("backend").backends[0].status, Status::Up);
    let log = supervisord.log();
    assert_eq!(log.matches("spawned: 'backend0'").count(), 1, "{log}");
    assert!(!log.contains("stopped: backend0"), "{log}");
    assert!(!log.contains("waiting for backend0 to stop"), "{log}");
    let errors = nginx.error_log();
    assert!(!errors.contains("failed; stopping it"), "{errors}");
    nginx.assert_clean_log();
}
