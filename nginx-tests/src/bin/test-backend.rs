//! A real backend process for tests, the demo and the benchmarks: answers every HTTP/1.x
//! request with `backend <port>` (keep-alive aware). `/slow/<ms>` answers after `<ms>` ms;
//! `/status/<code>` answers with that status (an application error, e.g. 500); `/gated` answers
//! once the file of `--gate` exists (a request kept in flight for as long as a test needs).
//!
//! Usage: test-backend [HOST:]<port> [--listen-after MS] [--protocol http|raw|fastcgi] [--ready-file PATH]
//!                     [--record PATH] [--exit-after MS] [--gate PATH]
//!   HOST                the IPv4 address to listen on (127.0.0.1 unless given), e.g. another
//!                       loopback address standing for another machine (127.0.0.2)
//!   --listen-after      sleep that long before listening (a slow-starting application)
//!   --protocol raw      read what arrives, answer one HTTP response, close (for uwsgi_pass,
//!                       scgi_pass, grpc_pass: their servers reply in HTTP or fail visibly)
//!   --protocol fastcgi  answer one FastCGI response, close
//!   --ready-file PATH   once listening, write the wall-clock time (ns since the epoch) there
//!   --record PATH       (http) append `METHOD PATH BODY-LENGTH` there for every request received
//!   --exit-after MS     exit with status 3 that long after starting (0: at once, never listening),
//!                       as an application that crashes at start-up would
//!   --gate PATH         (http) hold requests for `/gated` until PATH exists

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// A listen queue deep enough that a burst of held requests resuming together is not dropped
/// (and retried a second later) by the kernel.
const BACKLOG: u32 = 4096;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (host, port) = args.get(1).and_then(|arg| bind_address(arg)).expect(
        "usage: test-backend [HOST:]<port> [--listen-after MS] [--protocol P] [--ready-file F]",
    );
    let option = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|at| args.get(at + 1))
            .cloned()
    };
    if let Some(ms) = option("--exit-after") {
        let ms: u64 = ms.parse().expect("milliseconds");
        if ms == 0 {
            std::process::exit(3);
        }
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            std::process::exit(3);
        });
    }
    if let Some(ms) = option("--listen-after") {
        std::thread::sleep(Duration::from_millis(ms.parse().expect("milliseconds")));
    }
    let protocol = option("--protocol").unwrap_or_else(|| "http".into());
    let ready_file = option("--ready-file");
    let record: Option<&'static str> = option("--record").map(|path| &*path.leak());
    let gate: Option<&'static str> = option("--gate").map(|path| &*path.leak());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind((host, port).into()).expect("bind");
        let listener = socket.listen(BACKLOG).expect("listen");
        if let Some(path) = ready_file {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos();
            std::fs::write(path, now.to_string()).expect("write ready file");
        }
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let protocol = protocol.clone();
            tokio::spawn(async move {
                match protocol.as_str() {
                    "raw" => serve_raw(stream, port).await,
                    "fastcgi" => serve_fastcgi(stream, port).await,
                    _ => serve_http(stream, port, record, gate).await,
                }
            });
        }
    });
}

/// `PORT` (on 127.0.0.1) or `HOST:PORT` (an IPv4 address).
fn bind_address(arg: &str) -> Option<(Ipv4Addr, u16)> {
    match arg.split_once(':') {
        Some((host, port)) => Some((host.parse().ok()?, port.parse().ok()?)),
        None => Some((Ipv4Addr::LOCALHOST, arg.parse().ok()?)),
    }
}

async fn serve_http(
    stream: TcpStream,
    port: u16,
    record: Option<&'static str>,
    gate: Option<&'static str>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") {
                close = lower.contains("close");
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        if let Some(record) = record {
            let method = request_line.split(' ').next().unwrap_or("");
            let line = format!("{method} {path} {}\n", body.len());
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(record)
                .expect("open record file");
            std::io::Write::write_all(&mut file, line.as_bytes()).expect("write record file");
        }
        if path == "/gated" {
            let gate = gate.expect("/gated needs --gate PATH");
            while !std::path::Path::new(gate).exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        let status = path
            .strip_prefix("/status/")
            .and_then(|code| code.parse::<u16>().ok())
            .unwrap_or(200);
        let reply = format!("backend {port}\n");
        let response = format!(
            "HTTP/1.1 {status} Status\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {port}\r\n{}\r\n{reply}",
            reply.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        // One write: a head and a body in two segments would meet Nagle and delayed ACKs.
        if writer.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Waits for the request to arrive (whatever its framing), for raw protocols.
async fn read_some(stream: &mut TcpStream) {
    let mut buffer = [0u8; 65536];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await;
}

async fn serve_raw(mut stream: TcpStream, port: u16) {
    read_some(&mut stream).await;
    let body = format!("backend {port}\n");
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

fn fastcgi_record(kind: u8, content: &[u8]) -> Vec<u8> {
    let mut record = vec![1, kind, 0, 1];
    record.extend_from_slice(&(content.len() as u16).to_be_bytes());
    record.extend_from_slice(&[0, 0]);
    record.extend_from_slice(content);
    record
}

async fn serve_fastcgi(mut stream: TcpStream, port: u16) {
    read_some(&mut stream).await;
    let body = format!("backend {port}\n");
    let stdout = format!(
        "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut reply = fastcgi_record(6, stdout.as_bytes());
    reply.extend(fastcgi_record(6, b""));
    reply.extend(fastcgi_record(3, &[0, 0, 0, 0, 0, 0, 0, 0]));
    let _ = stream.write_all(&reply).await;
}
