//! A supervisord UNIX socket nginx's workers cannot reach (Debian ships it mode 0700 for root,
//! the workers run as www-data) fails every call. `nginx -t` says so with a `[warn]` that
//! names the socket, the workers' user and the `[unix_http_server]` fix; a reachable socket
//! gets no warning. Each verdict is checked against what the workers really manage: with the
//! warned-about socket no program is ever spawned, with the fix applied the program starts.
//!
//! The suite runs as root, so nginx runs with `user nobody nogroup;` (Debian has no group
//! `nobody`); the socket is a real supervisord's, its mode and owner set here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{
    eventually, free_port, scaled, Config, Nginx, Prefix, Server, SharedCopies, Upstream,
};

const WORKERS_USER: &str = "user nobody nogroup;";

fn config(socket: &Path, port: u16, user: Option<&str>) -> Config {
    let config = Config::new().workers(2).upstream(
        Upstream::new("backend")
            .server(format!("127.0.0.1:{port}"))
            .supervisord(format!("unix:{}", socket.display()))
            .directive("supervisord_hold_timeout 5s"),
    );
    let config = match user {
        Some(user) => config.main_raw(user),
        None => config,
    };
    config.server(
        Server::new()
            .location("/", "proxy_pass http://backend;")
            .location("/_start/", "supervisord_start backend;"),
    )
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, owner: &str) {
    let status = Command::new("chown")
        .arg(owner)
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {owner} {}", path.display());
}

/// `nginx -t` as the suite's user (root); its stderr.
fn test_conf(name: &str, config: &Config) -> String {
    let prefix = Prefix::new(name);
    prefix.write_config(config, Some(free_port()));
    let output = prefix.test_conf();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

fn assert_root() {
    let output = Command::new("id").arg("-u").output().expect("run id");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "0",
        "these tests set socket owners and run nginx's workers as nobody: run them as root"
    );
}

#[test]
fn a_socket_closed_to_the_workers_is_warned_about_and_really_unreachable() {
    assert_root();
    let port = free_port();
    let supervisord =
        Supervisord::start("perm-closed", &[Program::backend("backend0", port, 0)], "");
    let socket = supervisord.socket();
    // Debian's default: `[unix_http_server] file=... chmod=0700`, owned by root.
    set_mode(&socket, 0o700);
    chown(&socket, "root:root");
    let stderr = test_conf("perm-closed-t", &config(&socket, port, Some(WORKERS_USER)));
    let expected = format!(
        "[warn] supervisord: upstream \"backend\": nginx's workers (user \"nobody\", group \
         \"nogroup\") cannot reach the supervisord socket \"{}\": it is mode 0700, owned by \
         root:root, and connecting needs write permission; in supervisord's [unix_http_server] \
         section set \"chown=root:nogroup\" and \"chmod=0770\" (never a world-writable socket)",
        socket.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(stderr.matches("[warn]").count(), 1, "{stderr}");

    // The warning is right: the workers cannot start the program. A setting to fix is no
    // outage to wait out: the request is answered 502 at once (not after the hold timeout),
    // with one error line that names the socket and the fix.
    let nginx = Nginx::start("perm-closed", &config(&socket, port, Some(WORKERS_USER)));
    let asked = Instant::now();
    let reply = nginx.get("/");
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        asked.elapsed() < scaled(Duration::from_secs(2)),
        "answered after {:?}, the hold timeout is 5 s",
        asked.elapsed()
    );
    let line = format!(
        "cannot reach supervisord at unix:{}: connect to unix:{} failed: permission denied; \
         nginx's worker processes may not open supervisord's socket: give their user access \
         with chown= or chmod= in supervisord's [unix_http_server] section",
        socket.display(),
        socket.display()
    );
    nginx.error_log_once_it_has(&line);
    // More requests over a while: each answered at once (502, or 503 while the start backs
    // off), none held, and still the one line.
    for _ in 0..6 {
        let asked = Instant::now();
        let reply = nginx.get("/");
        assert!(matches!(reply.status, 502 | 503), "{reply:?}");
        assert!(
            asked.elapsed() < scaled(Duration::from_secs(2)),
            "{reply:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = nginx.error_log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("[error]")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains(&line), "{log}");
    assert!(!log.contains("no backend up within"), "{log}");
    assert_eq!(supervisord.spawns("backend0"), 0, "{}", supervisord.log());
    // Starting nginx warned too (its terminal is the test's; the log file is at notice).
    assert!(log.contains("cannot reach the supervisord socket"), "{log}");
    nginx.assert_clean_log();
}

#[test]
fn the_recommended_socket_gets_no_warning_and_works() {
    assert_root();
    let port = free_port();
    let supervisord = Supervisord::start("perm-open", &[Program::backend("backend0", port, 0)], "");
    let socket = supervisord.socket();
    // What the warning recommends: `chown=root:nogroup`, `chmod=0770`.
    chown(&socket, "root:nogroup");
    set_mode(&socket, 0o770);
    let stderr = test_conf("perm-open-t", &config(&socket, port, Some(WORKERS_USER)));
    assert!(!stderr.contains("[warn]"), "{stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");

    let nginx = Nginx::start("perm-open", &config(&socket, port, Some(WORKERS_USER)));
    let reply = nginx.get("/");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), format!("backend {port}"));
    // supervisord may log the spawn after its program already answered (a busy machine).
    assert!(
        eventually(2, || supervisord.spawns("backend0") == 1),
        "{}",
        supervisord.log()
    );
    assert!(!nginx.error_log().contains("cannot reach"));
    nginx.assert_clean_log();
}

#[test]
fn a_closed_directory_is_named() {
    assert_root();
    let port = free_port();
    let supervisord = Supervisord::start("perm-dir", &[Program::backend("backend0", port, 0)], "");
    let socket = supervisord.socket();
    set_mode(&socket, 0o777);
    set_mode(&supervisord.dir, 0o700);
    let stderr = test_conf("perm-dir-t", &config(&socket, port, Some(WORKERS_USER)));
    set_mode(&supervisord.dir, 0o755);
    let expected = format!(
        "cannot reach the supervisord socket \"{}\": directory \"{}\" (mode 0700, owned by \
         root:root) is not searchable by them",
        socket.display(),
        supervisord.dir.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// Without `user`, a master that is not root runs its workers as itself: nginx -t run as
/// nobody checks with the kernel's own `access()`. nobody runs copies of nginx and the module
/// in a directory it can read, wherever the checkout is (root's home is 0700).
#[test]
fn a_master_that_is_not_root_checks_its_own_access() {
    assert_root();
    let port = free_port();
    let supervisord = Supervisord::start("perm-self", &[Program::backend("backend0", port, 0)], "");
    let socket = supervisord.socket();
    chown(&socket, "root:root");
    let copies = SharedCopies::new("perm-self");
    let prefix = Prefix::new("perm-self-t");
    prefix.write_config(
        &config(&socket, port, None)
            .without_module()
            .main_raw(copies.load_module()),
        Some(free_port()),
    );
    let status = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&prefix.dir)
        .status()
        .expect("run chown");
    assert!(status.success());
    let as_nobody = |prefix: &Prefix| {
        let output = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&copies.nginx)
            .arg("-p")
            .arg(&prefix.dir)
            .arg("-c")
            .arg(prefix.conf_path())
            .arg("-t")
            .output()
            .expect("run setpriv (util-linux)");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    set_mode(&socket, 0o700);
    let stderr = as_nobody(&prefix);
    assert!(
        stderr.contains(&format!(
            "nginx's workers (user \"nobody\", group \"nogroup\") cannot reach the supervisord \
             socket \"{}\": it is mode 0700",
            socket.display()
        )),
        "{stderr}"
    );
    chown(&socket, "root:nogroup");
    set_mode(&socket, 0o770);
    let stderr = as_nobody(&prefix);
    assert!(!stderr.contains("[warn]"), "{stderr}");
}
