//! The wrapper works around every balancer of stock nginx: only UP backends get requests,
//! and control commands change that for every worker.

use std::collections::BTreeSet;

use nginx_tests::{backends_by_worker, free_port, Backend, Nginx};

fn check_balancer(name: &str, balancer: &str) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _backends: Vec<Backend> = ports.iter().map(|&port| Backend::start(port)).collect();
    let nginx = Nginx::start(
        name,
        2,
        &format!(
            "upstream backend {{
                {balancer}
                server 127.0.0.1:{};
                server 127.0.0.1:{};
                server 127.0.0.1:{} down;
                supervisord none;
                supervisord_inherit_backend_status;
                keepalive 4;
            }}
            server {{
                listen 127.0.0.1:{{port}} reuseport;
                add_header X-Worker $pid always;
                location / {{
                    proxy_pass http://backend;
                    proxy_http_version 1.1;
                    proxy_set_header Connection \"\";
                }}
                location /_start/ {{ supervisord_start backend; }}
                location /_stop/ {{ supervisord_stop backend; }}
            }}",
            ports[0], ports[1], ports[2]
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
        "{balancer}: a DOWN backend got requests: {before:?}"
    );
    assert!(!before.is_empty());

    assert_eq!(nginx.get("/_start/2").status, 200);
    assert_eq!(nginx.get("/_stop/0").status, 200);
    assert_eq!(nginx.get("/_stop/1").status, 200);
    let after = used(&paths);
    assert_eq!(
        after,
        BTreeSet::from([name_of(2)]),
        "{balancer}: only the one UP backend may answer"
    );

    assert_eq!(nginx.get("/_stop/2").status, 200);
    let none_up = used(&paths);
    assert_eq!(
        none_up,
        BTreeSet::from(["status 502".to_string()]),
        "{balancer}"
    );
}

#[test]
fn round_robin() {
    check_balancer("rr", "");
}

#[test]
fn least_conn() {
    check_balancer("least-conn", "least_conn;");
}

#[test]
fn ip_hash() {
    check_balancer("ip-hash", "ip_hash;");
}

#[test]
fn generic_hash() {
    check_balancer("hash", "hash $request_uri;");
}

#[test]
fn consistent_hash() {
    check_balancer("chash", "hash $request_uri consistent;");
}

#[test]
fn random() {
    check_balancer("random", "random;");
}

#[test]
fn random_two_with_shared_zone() {
    check_balancer(
        "random-zone",
        "zone backend_zone 64k; random two least_conn;",
    );
}
