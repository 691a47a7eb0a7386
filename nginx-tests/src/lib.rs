//! Harness for the integration suite: a real nginx (several workers) with the module loaded,
//! real backend processes, and a plain HTTP/1.1 client over TCP.
//!
//! Binaries come from `make build`: `build/sbin/nginx`, `build/modules/ngx_supervisord_module.so`,
//! and the `test-backend` binary of this crate; `make distro-test` points the suite at Debian's
//! nginx and a module built for it.

pub mod config;
pub mod error_log;
pub mod patched;
pub mod raw;
pub mod status;
pub mod supervisord;

pub use config::{Config, Server, Upstream};
pub use error_log::AllowedLine;
pub use status::SupervisordStatus;

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The nginx under test: `build/sbin/nginx`, or `$NGX_SUPERVISORD_NGINX` (e.g. Debian's).
pub fn nginx_binary() -> PathBuf {
    std::env::var_os("NGX_SUPERVISORD_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_dir().join("build/sbin/nginx"))
}

/// The module built for that nginx, or `$NGX_SUPERVISORD_MODULE`.
pub fn module_path() -> PathBuf {
    std::env::var_os("NGX_SUPERVISORD_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_dir().join("build/modules/ngx_supervisord_module.so"))
}

/// `test-backend` sits next to this executable (a tool such as `bench`), or next to the
/// `deps/` folder that holds the test executables.
pub fn backend_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let folder = exe.parent().unwrap();
    let sibling = folder.join("test-backend");
    if sibling.exists() {
        return sibling;
    }
    folder.parent().unwrap().join("test-backend")
}

/// The factor every wall-clock bound of the suite is multiplied by: `NGX_SUPERVISORD_TIME_FACTOR`
/// (a positive number, 1 when unset), e.g. 3 for the AddressSanitizer build, whose nginx runs
/// several times slower. Read once; a value that is not a positive number fails the test.
pub fn time_factor() -> f64 {
    static FACTOR: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *FACTOR.get_or_init(|| match std::env::var("NGX_SUPERVISORD_TIME_FACTOR") {
        Err(_) => 1.0,
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(factor) if factor > 0.0 && factor.is_finite() => factor,
            _ => panic!("NGX_SUPERVISORD_TIME_FACTOR={text:?}: expected a positive number"),
        },
    })
}

/// `duration` times [`time_factor`]: the one way a test states a wall-clock bound (a product
/// promise such as "answered within 500 ms", or a generous deadline for a condition).
pub fn scaled(duration: Duration) -> Duration {
    duration.mul_f64(time_factor())
}

/// A loopback port nobody in this test process was given before and that is free right now.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A port as [`free_port`] gives it that is free on the loopback address `host` too (e.g.
/// 127.0.0.2, standing for another machine): a program bound to `host` can take it, and
/// nothing in this test process listens on it at 127.0.0.1 either.
pub fn free_port_on(host: &str) -> u16 {
    loop {
        let port = free_port();
        if TcpListener::bind((host, port)).is_ok() {
            return port;
        }
    }
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not listen on port {port}");
}

/// A test-backend process; killed on drop.
pub struct Backend {
    pub port: u16,
    child: Child,
}

impl Backend {
    pub fn start(port: u16) -> Self {
        Self::start_with_args(port, &[])
    }

    /// As [`Backend::start`], with more `test-backend` options (e.g. `--record PATH`).
    pub fn start_with_args(port: u16, args: &[&str]) -> Self {
        let child = Command::new(backend_binary())
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn test-backend");
        wait_for_port(port, "test-backend");
        Self { port, child }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path of the system's temporary folder for one test's `kind` of scratch file or folder
/// (`test` prefix, `gate`, `record`...), unique to the test's `name` and to this test process.
pub fn scratch_path(kind: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "ngx-supervisord-{kind}-{name}-{}",
        std::process::id()
    ))
}

/// A scratch nginx prefix with a generated `nginx.conf`.
pub struct Prefix {
    pub dir: PathBuf,
}

impl Prefix {
    pub fn new(name: &str) -> Self {
        let dir = scratch_path("test", name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("logs")).unwrap();
        Self { dir }
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    /// Writes `config` as `nginx.conf`, for an nginx that listens on `port` (the port of
    /// [`Server::new`]; `None` if no server uses it). Returns the text written.
    pub fn write_config(&self, config: &Config, port: Option<u16>) -> String {
        let text = config.render(&self.dir, port);
        fs::write(self.conf_path(), &text).unwrap();
        text
    }

    /// Runs `nginx -t` on the written configuration.
    pub fn test_conf(&self) -> Output {
        Command::new(nginx_binary())
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.conf_path())
            .arg("-t")
            .output()
            .expect("run nginx -t")
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {} for inspection", self.dir.display());
        }
    }
}

/// A running nginx (master and workers). On drop it is stopped and, unless the test is already
/// failing, its error log is checked: any `[alert]`, `[emerg]` or `[crit]` line, or a worker that
/// "exited on signal", fails the test unless allowed with [`Nginx::allow_log_line`].
pub struct Nginx {
    pub prefix: Prefix,
    pub port: u16,
    master: Child,
    allowed: Mutex<Vec<AllowedLine>>,
    /// Set by [`Nginx::start_with_hosts`]: the file bound over `/etc/hosts` for nginx.
    hosts: Option<PathBuf>,
    /// The nginx executable: [`nginx_binary`], or another build ([`Nginx::start_binary`]).
    binary: PathBuf,
}

/// `nginx` (or any `program`), run in a private mount namespace where `hosts` is bound over
/// `/etc/hosts` (so that a name resolves as the test needs), or plainly without `hosts`.
pub fn command_with_hosts(program: &Path, hosts: Option<&Path>) -> Command {
    let Some(hosts) = hosts else {
        return Command::new(program);
    };
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(hosts)
        .arg(program);
    command
}

impl Nginx {
    /// Starts nginx with `config`; its [`Server::new`] servers listen on `self.port`.
    pub fn start(name: &str, config: &Config) -> Self {
        Self::start_inner(&nginx_binary(), name, config, None)
    }

    /// As [`Nginx::start`], with another nginx executable than the one under test (e.g. stock
    /// nginx beside the patched one, to compare them in one test).
    pub fn start_binary(binary: &Path, name: &str, config: &Config) -> Self {
        Self::start_inner(binary, name, config, None)
    }

    /// As [`Nginx::start`], with `hosts` as nginx's `/etc/hosts` (a private mount namespace,
    /// needs root): e.g. `localhost` resolving to `::1` and `127.0.0.1` as on many systems.
    /// Signals (`nginx -s`) go through the same namespace, as they read the configuration.
    pub fn start_with_hosts(name: &str, config: &Config, hosts: &str) -> Self {
        let path = scratch_path("hosts", name);
        fs::write(&path, hosts).unwrap();
        Self::start_inner(&nginx_binary(), name, config, Some(path))
    }

    fn start_inner(binary: &Path, name: &str, config: &Config, hosts: Option<PathBuf>) -> Self {
        let port = free_port();
        let prefix = Prefix::new(name);
        prefix.write_config(config, Some(port));
        let master = command_with_hosts(binary, hosts.as_deref())
            .arg("-p")
            .arg(&prefix.dir)
            .arg("-c")
            .arg(prefix.conf_path())
            .arg("-g")
            .arg("daemon off; master_process on;")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let nginx = Self {
            prefix,
            port,
            master,
            allowed: Mutex::new(Vec::new()),
            hosts,
            binary: binary.to_path_buf(),
        };
        wait_for_port(port, "nginx");
        nginx.wait_for_workers(config.worker_count());
        nginx
    }

    fn wait_for_workers(&self, workers: usize) {
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        while Instant::now() < deadline {
            if self.worker_pids().len() >= workers {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("nginx did not start {workers} workers");
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        let master = self.master.id().to_string();
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            let parent = after_name.split_whitespace().nth(1).unwrap_or("");
            let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if parent == master
                && cmdline.contains("worker process")
                && !cmdline.contains("shutting down")
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Signals the master (`reload`, `quit`...) through `nginx -s`.
    pub fn signal(&self, signal: &str) -> Output {
        command_with_hosts(&self.binary, self.hosts.as_deref())
            .arg("-p")
            .arg(&self.prefix.dir)
            .arg("-c")
            .arg(self.prefix.conf_path())
            .arg("-s")
            .arg(signal)
            .output()
            .expect("run nginx -s")
    }

    /// Writes `config` and reloads, waiting for a fresh set of workers.
    pub fn reload(&self, config: &Config) {
        let workers = config.worker_count();
        let before = self.worker_pids();
        self.prefix.write_config(config, Some(self.port));
        let output = self.signal("reload");
        assert!(output.status.success(), "reload failed: {output:?}");
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        while Instant::now() < deadline {
            let now = self.worker_pids();
            if now.len() >= workers && now.iter().all(|pid| !before.contains(pid)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not reload");
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.port, "GET", path)
    }

    pub fn error_log(&self) -> String {
        self.prefix.error_log()
    }

    /// The error log once a line of it contains `needle` (within 10 s, [`scaled`]): nginx logs
    /// a status change when it reads supervisord's answer, which may come after supervisord
    /// itself already shows the new state.
    #[track_caller]
    pub fn error_log_once_it_has(&self, needle: &str) -> String {
        let mut log = String::new();
        let seen = eventually(10, || {
            log = self.error_log();
            log.contains(needle)
        });
        assert!(seen, "the error log never got {needle:?}:\n{log}");
        log
    }

    /// The parsed answer of the `supervisord_status` location at `path`.
    pub fn supervisord_status(&self, path: &str) -> SupervisordStatus {
        let response = self.get(path);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        SupervisordStatus::parse(&response.body)
            .unwrap_or_else(|error| panic!("{path}: {error}: {}", response.body))
    }

    /// The status of each backend of upstream `backend`, as the `supervisord_status` location
    /// at `/_status` shows it (the names every test uses).
    pub fn backend_statuses(&self) -> Vec<status::Status> {
        self.supervisord_status("/_status")
            .upstream("backend")
            .backends
            .iter()
            .map(|backend| backend.status)
            .collect()
    }

    /// How many requests upstream `upstream` holds now, as the `supervisord_status` location
    /// at `/_status` shows it (the name every test uses).
    pub fn held(&self, upstream: &str) -> u64 {
        self.supervisord_status("/_status").upstream(upstream).held
    }

    /// Lets error-log lines containing `substring` pass the check on drop, although they are
    /// `[crit]`, `[alert]`, `[emerg]` or "exited on signal" lines: the test provokes them on
    /// purpose, for the reason `why`.
    pub fn allow_log_line(&self, substring: &str, why: &str) {
        self.allowed
            .lock()
            .unwrap()
            .push(AllowedLine::new(substring, why));
    }

    /// The error-log lines that fail the check (see [`error_log::offending_lines`]).
    pub fn offending_log_lines(&self) -> Vec<String> {
        error_log::offending_lines(&self.error_log(), &self.allowed.lock().unwrap())
    }

    /// Fails the test now if the error log already holds a line that fails the check.
    #[track_caller]
    pub fn assert_clean_log(&self) {
        let offending = self.offending_log_lines();
        if !offending.is_empty() {
            panic!("{}", self.log_failure(&offending));
        }
    }

    fn log_failure(&self, offending: &[String]) -> String {
        let allowed: Vec<String> = self
            .allowed
            .lock()
            .unwrap()
            .iter()
            .map(|allowed| format!("  {:?} ({})", allowed.substring, allowed.why))
            .collect();
        format!(
            "the error log of nginx in {} has {} line(s) with {:?} that the test did not \
             allow:\n{}\nallowed:\n{}",
            self.prefix.dir.display(),
            offending.len(),
            error_log::FORBIDDEN,
            offending.join("\n"),
            if allowed.is_empty() {
                "  (nothing)".to_string()
            } else {
                allowed.join("\n")
            }
        )
    }

    fn stop(&mut self) {
        let _ = self.signal("stop");
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if let Some(hosts) = &self.hosts {
            let _ = fs::remove_file(hosts);
        }
        // After the stop, so that whatever the shutdown logged is checked too.
        if !std::thread::panicking() {
            let offending = self.offending_log_lines();
            if !offending.is_empty() {
                panic!("{}", self.log_failure(&offending));
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), so that successive calls
/// are spread over nginx's workers.
pub fn request(port: u16, method: &str, path: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    stream
        .set_read_timeout(Some(scaled(Duration::from_secs(20))))
        .unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

/// The requests a test backend started with `--record PATH` received so far
/// (`METHOD PATH BODY-LENGTH` lines).
pub fn recorded_requests(record: &Path) -> Vec<String> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// As [`request`], with a body of `body_len` bytes (`x`) and its `Content-Length`.
pub fn request_with_body(port: u16, method: &str, path: &str, body_len: usize) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    stream
        .set_read_timeout(Some(scaled(Duration::from_secs(20))))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {body_len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b'x'; body_len]).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Which backends each worker sent requests to, over `count` fresh connections to `path`.
/// Needs `add_header X-Worker $pid always;` in the proxied location.
pub fn backends_by_worker(
    port: u16,
    path: &str,
    count: usize,
) -> std::collections::BTreeMap<u32, std::collections::BTreeSet<String>> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..count {
        let response = request(port, "GET", path);
        let worker: u32 = response
            .header("X-Worker")
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no X-Worker header: {response:?}"));
        let backend = if response.status == 200 {
            response.body.trim().to_string()
        } else {
            format!("status {}", response.status)
        };
        seen.entry(worker)
            .or_insert_with(std::collections::BTreeSet::new)
            .insert(backend);
    }
    seen
}

/// Polls `check` every 50 ms for up to `seconds` ([`scaled`]); true once it held.
pub fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(Duration::from_secs(seconds));
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// `count` GETs of `path`, each on its own thread and connection (so spread over the workers),
/// started now; join the handles for the responses.
pub fn spawn_requests(
    port: u16,
    count: usize,
    path: &'static str,
) -> Vec<std::thread::JoinHandle<Response>> {
    (0..count)
        .map(|_| std::thread::spawn(move || request(port, "GET", path)))
        .collect()
}

/// A gate for requests to the test backend: a backend started with [`Gate::arg`] holds every
/// request for `/gated` until the test calls [`Gate::open`], so a request stays in flight for
/// exactly as long as the test needs, however busy the machine. Removed on drop.
pub struct Gate {
    pub path: PathBuf,
}

impl Gate {
    pub fn new(name: &str) -> Self {
        let path = scratch_path("gate", name);
        let _ = fs::remove_file(&path);
        Self { path }
    }

    /// The `test-backend` option: `--gate PATH`.
    pub fn arg(&self) -> String {
        format!("--gate {}", self.path.display())
    }

    /// Lets every held `/gated` request (and every later one) through.
    pub fn open(&self) {
        fs::write(&self.path, "open").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Copies of the nginx under test and of the module, in a fresh directory of the system's
/// temporary folder that every user can read (mode 0755), removed on drop: what a test runs as
/// another user (`nobody`) must not depend on where the checkout lives (root's home is 0700).
pub struct SharedCopies {
    pub dir: PathBuf,
    pub nginx: PathBuf,
    pub module: PathBuf,
}

impl SharedCopies {
    pub fn new(name: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch_path("copies", name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let copies = Self {
            nginx: dir.join("nginx"),
            module: dir.join("ngx_supervisord_module.so"),
            dir,
        };
        for (from, to) in [
            (nginx_binary(), &copies.nginx),
            (module_path(), &copies.module),
        ] {
            fs::copy(&from, to).unwrap_or_else(|error| {
                panic!("copy {} to {}: {error}", from.display(), to.display())
            });
            fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
        }
        copies
    }

    /// The `load_module` line for the copy of the module (with [`Config::without_module`]).
    pub fn load_module(&self) -> String {
        format!("load_module {};", self.module.display())
    }
}

impl Drop for SharedCopies {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
