//! Reloads: the shared records of upstreams no live configuration uses are freed, so any
//! number of reloads that change the servers never fills the zone; a reload back to an older
//! server list starts from supervisord's view, not from that list's stale statuses; and a
//! reload reads supervisord's view at once.

use std::time::{Duration, Instant};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, scaled, Config, Nginx, Server, Upstream};

const RELOADS: u16 = 300;

fn wide(last_port: u16) -> Config {
    // 199 fixed servers (nothing listens there: no request is sent) and one that changes.
    let mut ports: Vec<u16> = (41000..41199).collect();
    ports.push(last_port);
    Config::new()
        .workers(2)
        .upstream(Upstream::new("wide").servers(&ports).supervisord("none"))
        .server(Server::new().location("= /_status", "supervisord_status;"))
}

#[test]
fn hundreds_of_changing_reloads_never_fill_the_zone() {
    let nginx = Nginx::start("reclaim", &wide(42000));
    let started = Instant::now();
    for reload in 1..=RELOADS {
        nginx.reload(&wide(42000 + reload));
        if reload % 50 == 0 {
            // The configuration that runs is the last one, with all its servers.
            let status = nginx.supervisord_status("/_status");
            let backends = &status.upstream("wide").backends;
            assert_eq!(backends.len(), 200);
            assert_eq!(
                backends[199].server,
                format!("127.0.0.1:{}", 42000 + reload)
            );
        }
    }
    let took = started.elapsed();
    eprintln!("{RELOADS} reloads of a 200-server upstream, each changing it, in {took:?}");
    let log = nginx.error_log();
    assert!(!log.contains("is full"), "{log}");
    nginx.assert_clean_log();
}

fn pair(ports: &[u16], supervisord: &Supervisord) -> Config {
    Config::new()
        .workers(2)
        .upstream(
            Upstream::new("backend")
                .servers(ports)
                .supervisord(supervisord.address())
                // Far away: whatever is read at a reload is not the periodic read.
                .sync_interval("60s"),
        )
        .server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("= /_status", "supervisord_status;"),
        )
}

#[test]
fn a_reload_starts_from_supervisord_s_view() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::start(
        "reload-view",
        &[
            Program::backend("backend0", ports[0], 0),
            Program::backend("backend1", ports[1], 0),
        ],
        "",
    );
    let nginx = Nginx::start("reload-view", &pair(&ports[..1], &supervisord));
    assert_eq!(nginx.get("/").status, 200);
    assert_eq!(nginx.backend_statuses(), [Status::Up]);

    // backend1 is started by hand, then a reload adds its server: routed at once.
    supervisord.ctl(&["start", "backend1"]);
    supervisord.wait_state("backend1", "RUNNING");
    let reloaded = Instant::now();
    nginx.reload(&pair(&ports, &supervisord));
    assert!(
        eventually(2, || nginx.backend_statuses() == [Status::Up, Status::Up]),
        "{:?}",
        nginx.backend_statuses()
    );
    let took = reloaded.elapsed();
    eprintln!("statuses matched supervisord's {took:?} after the reload began");
    assert!(took < scaled(Duration::from_millis(1500)), "{took:?}");

    // backend0 is stopped by hand while the two-server list runs (nginx does not know yet),
    // then nginx reloads back to the one-server list: its old record said UP, but the
    // statuses come from supervisord: the first request starts backend0 and gets 200.
    supervisord.ctl(&["stop", "backend0"]);
    supervisord.wait_state("backend0", "STOPPED");
    nginx.reload(&pair(&ports[..1], &supervisord));
    let response = nginx.get("/");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body.trim(), format!("backend {}", ports[0]));
    assert_eq!(supervisord.log().matches("spawned: 'backend0'").count(), 2);
    nginx.assert_clean_log();
}
