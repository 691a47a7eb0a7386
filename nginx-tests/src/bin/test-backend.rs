//! A real backend process for tests and the demo: answers every HTTP/1.x request with
//! `backend <port>` (keep-alive aware). `/slow/<ms>` answers after `<ms>` milliseconds.
//!
//! Usage: test-backend <port> [--listen-after MS] [--protocol http|raw|fastcgi]
//!   --listen-after  sleep that long before listening (a slow-starting application)
//!   --protocol raw      read what arrives, answer one HTTP response, close (for uwsgi_pass,
//!                       scgi_pass, grpc_pass: their servers reply in HTTP or fail visibly)
//!   --protocol fastcgi  answer one FastCGI response, close

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .and_then(|arg| arg.parse().ok())
        .expect("usage: test-backend <port> [--listen-after MS] [--protocol P]");
    let option = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|at| args.get(at + 1))
            .cloned()
    };
    if let Some(ms) = option("--listen-after") {
        std::thread::sleep(Duration::from_millis(ms.parse().expect("milliseconds")));
    }
    let protocol = option("--protocol").unwrap_or_else(|| "http".into());
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming().flatten() {
        let protocol = protocol.clone();
        std::thread::spawn(move || match protocol.as_str() {
            "raw" => serve_raw(stream, port),
            "fastcgi" => serve_fastcgi(stream, port),
            _ => serve(stream, port),
        });
    }
}

/// Waits for the request to arrive (whatever its framing), for raw protocols.
fn read_some(stream: &mut TcpStream) {
    let mut buffer = [0u8; 65536];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.read(&mut buffer);
}

fn serve_raw(mut stream: TcpStream, port: u16) {
    read_some(&mut stream);
    let body = format!("backend {port}\n");
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

fn fastcgi_record(kind: u8, content: &[u8]) -> Vec<u8> {
    let mut record = vec![1, kind, 0, 1];
    record.extend_from_slice(&(content.len() as u16).to_be_bytes());
    record.extend_from_slice(&[0, 0]);
    record.extend_from_slice(content);
    record
}

fn serve_fastcgi(mut stream: TcpStream, port: u16) {
    read_some(&mut stream);
    let body = format!("backend {port}\n");
    let stdout = format!(
        "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut reply = fastcgi_record(6, stdout.as_bytes());
    reply.extend(fastcgi_record(6, b""));
    reply.extend(fastcgi_record(3, &[0, 0, 0, 0, 0, 0, 0, 0]));
    let _ = stream.write_all(&reply);
}

fn serve(stream: TcpStream, port: u16) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let _ = writer.set_nodelay(true);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
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
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        if let Some(ms) = path.strip_prefix("/slow/") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
        }
        let reply = format!("backend {port}\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {port}\r\n{}\r\n",
            reply.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(reply.as_bytes()).is_err()
        {
            return;
        }
        if close {
            return;
        }
    }
}
