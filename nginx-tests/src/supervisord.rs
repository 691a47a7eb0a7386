//! A real supervisord (Debian's `supervisor` package) for the integration suite: its own
//! configuration, TCP port with Basic auth, UNIX socket without auth, and programs that run the
//! test backend.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Config, Nginx, Server, Upstream};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret-Pw";

pub struct Program {
    pub name: String,
    pub command: String,
    pub startsecs: u32,
    /// Extra lines for the `[program:x]` section.
    pub extra: String,
}

impl Program {
    /// A program running the test backend on `port`.
    pub fn backend(name: &str, port: u16, startsecs: u32) -> Self {
        Self {
            name: name.into(),
            command: format!("{} {port}", crate::backend_binary().display()),
            startsecs,
            extra: String::new(),
        }
    }

    /// A program running the test backend on `port` with extra arguments
    /// (`--listen-after MS`, `--protocol P`).
    pub fn backend_with(name: &str, port: u16, startsecs: u32, args: &str) -> Self {
        let mut program = Self::backend(name, port, startsecs);
        program.command = format!("{} {args}", program.command);
        program
    }

    pub fn command(name: &str, command: &str, startsecs: u32) -> Self {
        Self {
            name: name.into(),
            command: command.into(),
            startsecs,
            extra: String::new(),
        }
    }
}

pub struct Supervisord {
    pub dir: PathBuf,
    pub port: u16,
    child: Child,
}

impl Supervisord {
    /// Starts supervisord with `programs`; `groups` are extra `[group:x]` sections.
    pub fn start(name: &str, programs: &[Program], groups: &str) -> Self {
        Self::start_on(name, programs, groups, free_port(), (USER, PASSWORD))
    }

    /// As [`Self::start`], its TCP port and Basic-auth credentials given (e.g. those of a
    /// documented example).
    pub fn start_on(
        name: &str,
        programs: &[Program],
        groups: &str,
        port: u16,
        (user, password): (&str, &str),
    ) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ngx-supervisord-sv-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\nloglevel=info\n\
             [inet_http_server]\nport=127.0.0.1:{port}\nusername={user}\npassword={password}\n\
             [unix_http_server]\nfile={d}/supervisor.sock\nchmod=0777\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n",
            d = dir.display()
        );
        for program in programs {
            conf.push_str(&format!(
                "[program:{}]\ncommand={}\nautostart=false\nautorestart=false\nstartsecs={}\n\
                 startretries=0\nstopwaitsecs=2\n{}\n",
                program.name, program.command, program.startsecs, program.extra
            ));
        }
        conf.push_str(groups);
        fs::write(dir.join("supervisord.conf"), conf).unwrap();
        let child = Self::spawn(&dir);
        let supervisord = Self { dir, port, child };
        supervisord.wait_until_up();
        supervisord
    }

    fn spawn(dir: &std::path::Path) -> Child {
        Command::new("supervisord")
            .arg("-c")
            .arg(dir.join("supervisord.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn supervisord (apt-get install supervisor)")
    }

    fn wait_until_up(&self) {
        let supervisord = self;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if supervisord.ctl(&["pid"]).trim().parse::<u32>().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("supervisord did not come up: {}", supervisord.log());
    }

    /// Stops supervisord itself (SIGTERM: it stops its programs and removes its socket), as an
    /// outage would.
    pub fn stop_daemon(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM supervisord failed");
        let _ = self.child.wait();
    }

    /// Starts supervisord again, same configuration and socket, after [`Self::stop_daemon`].
    pub fn restart_daemon(&mut self) {
        self.child = Self::spawn(&self.dir);
        self.wait_until_up();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("supervisor.sock")
    }

    /// Its address as the `supervisord` directive takes it: `unix:/path/supervisor.sock`.
    pub fn address(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    pub fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new("supervisorctl")
            .arg("-c")
            .arg(self.dir.join("supervisord.conf"))
            .args(args)
            .output()
            .expect("run supervisorctl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The state supervisorctl shows for `program` (RUNNING, STOPPED, ...).
    pub fn state(&self, program: &str) -> String {
        self.ctl(&["status", program])
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    }

    pub fn wait_state(&self, program: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.state(program) == state {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{program} never became {state}: {}", self.ctl(&["status"]));
    }

    /// Kills `program` with SIGKILL behind supervisord's back, as a crash would.
    pub fn crash(&self, program: &str) {
        let pid = self.ctl(&["pid", program]);
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 {program} (pid {pid:?}) failed");
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("supervisord.log")).unwrap_or_default()
    }

    /// How many times supervisord spawned `program` so far, by its log.
    pub fn spawns(&self, program: &str) -> usize {
        self.log().matches(&format!("spawned: '{program}'")).count()
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "all"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The misbehaving stand-in of `src/bin/fake-supervisord.rs`; killed on drop.
pub struct FakeSupervisord {
    pub port: u16,
    child: Child,
}

impl FakeSupervisord {
    pub fn start(mode: &str) -> Self {
        let port = free_port();
        let binary = crate::backend_binary().with_file_name("fake-supervisord");
        let child = Command::new(binary)
            .arg(port.to_string())
            .arg(mode)
            .spawn()
            .expect("spawn fake-supervisord");
        crate::wait_for_port(port, "fake-supervisord");
        Self { port, child }
    }
}

impl Drop for FakeSupervisord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx (2 workers) with upstream `backend` over `ports`, managed by `supervisord`, with the
/// `extra` upstream directives; `/` passes to it, `/_start/` and `/_stop/` control it and
/// `= /_status` shows it.
pub fn nginx_with_controls(
    name: &str,
    ports: &[u16],
    supervisord: &Supervisord,
    extra: &[&str],
) -> Nginx {
    let upstream = Upstream::new("backend")
        .servers(ports)
        .supervisord(supervisord.address())
        .directives(extra);
    Nginx::start(
        name,
        &Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("/_start/", "supervisord_start backend;")
                .location("/_stop/", "supervisord_stop backend;")
                .location("= /_status", "supervisord_status;"),
        ),
    )
}
