//! The wrapper works around every balancer of stock nginx: only UP backends get requests,
//! and control commands change that for every worker.

use std::collections::BTreeSet;

use nginx_tests::{backends_by_worker, free_port, Backend, Config, Nginx, Server, Upstream};

/// `balancer`: the directives that choose the balancer (none for round robin).
fn check_balancer(name: &str, balancer: &[&str]) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _backends: Vec<Backend> = ports.iter().map(|&port| Backend::start(port)).collect();
    let upstream = balancer
        .iter()
        .fold(Upstream::new("backend"), |upstream, line| {
            upstream.directive(line)
        })
        .servers(&ports[..2])
        .server(format!("127.0.0.1:{} down", ports[2]))
        .supervisord("none")
        .inherit_backend_status()
        .directive("keepalive 4");
    let nginx = Nginx::start(
        name,
        &Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .directive("add_header X-Worker $pid always")
                .location(
                    "/",
                    "proxy_pass http://backend;\n\
                     proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\";",
                )
                .location("/_start/", "supervisord_start backend;")
                .location("/_stop/", "supervisord_stop backend;"),
        ),
    );
    let used = |paths: &[&str]| -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for path in paths {
            for backends in backends_by_worker(nginx.port, path, 30).values() {
                all.extend(backends.iter().cloned());
            }
        }
        all
    };
    let paths = ["/a", "/b", "/c", "/d", "/e", "/f"];
    let name_of = |index: usize| format!("backend {}", ports[index]);

    let before = used(&paths);
    assert!(
        !before.contains(&name_of(2)),
        "{name}: a DOWN backend got requests: {before:?}"
    );
    assert!(!before.is_empty());

    assert_eq!(nginx.get("/_start/2").status, 200);
    assert_eq!(nginx.get("/_stop/0").status, 200);
    assert_eq!(nginx.get("/_stop/1").status, 200);
    let after = used(&paths);
    assert_eq!(
        after,
        BTreeSet::from([name_of(2)]),
        "{name}: only the one UP backend may answer"
    );

    assert_eq!(nginx.get("/_stop/2").status, 200);
    let none_up = used(&paths);
    assert_eq!(
        none_up,
        BTreeSet::from(["status 502".to_string()]),
        "{name}"
    );
}

#[test]
fn round_robin() {
    check_balancer("rr", &[]);
}

#[test]
fn least_conn() {
    check_balancer("least-conn", &["least_conn"]);
}

#[test]
fn ip_hash() {
    check_balancer("ip-hash", &["ip_hash"]);
}

#[test]
fn generic_hash() {
    check_balancer("hash", &["hash $request_uri"]);
}

#[test]
fn consistent_hash() {
    check_balancer("chash", &["hash $request_uri consistent"]);
}

#[test]
fn random() {
    check_balancer("random", &["random"]);
}

#[test]
fn random_two_with_shared_zone() {
    check_balancer(
        "random-zone",
        &["zone backend_zone 64k", "random two least_conn"],
    );
}
