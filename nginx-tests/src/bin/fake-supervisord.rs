//! A deliberately broken stand-in for supervisord, for the faults a real one cannot produce on
//! demand. It is NOT supervisord: it only misbehaves.
//!
//! Usage: fake-supervisord <port> <mode> [<calls file>], where mode is
//!   hang     accept and read the request, never answer
//!   html     answer 200 with an HTML page (like supervisord's web UI on a wrong path)
//!   garbage  answer bytes that are not HTTP, then close
//!   badxml   answer 200 text/xml whose body is not XML-RPC
//!   reset    read a little of the request and close with unread data (the peer sees a reset)
//!   status500  answer HTTP 500 (a proxy in front of supervisord failing)
//! and the calls file, when given, gets one line per request read: its XML-RPC method name.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

static CALLS_FILE: OnceLock<Option<String>> = OnceLock::new();

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("port");
    let mode = args.next().expect("mode");
    CALLS_FILE.set(args.next()).expect("set once");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming().flatten() {
        let mode = mode.clone();
        std::thread::spawn(move || misbehave(stream, &mode));
    }
}

fn read_request(stream: &mut TcpStream) {
    let mut buffer = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let read = stream.read(&mut buffer).unwrap_or(0);
    note_call(&String::from_utf8_lossy(&buffer[..read]));
}

/// Appends the request's method name to the calls file, if any (one small write: whole lines).
fn note_call(request: &str) {
    let Some(Some(path)) = CALLS_FILE.get() else {
        return;
    };
    let method = request
        .split_once("<methodName>")
        .and_then(|(_, rest)| rest.split_once("</methodName>"))
        .map_or("?", |(method, _)| method);
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(format!("{method}\n").as_bytes());
    }
}

fn answer(stream: &mut TcpStream, content_type: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

fn misbehave(mut stream: TcpStream, mode: &str) {
    match mode {
        "hang" => {
            read_request(&mut stream);
            std::thread::sleep(Duration::from_secs(3600));
        }
        "html" => {
            read_request(&mut stream);
            answer(
                &mut stream,
                "text/html",
                "<html><body>Supervisor status</body></html>",
            );
            std::thread::sleep(Duration::from_secs(5));
        }
        "garbage" => {
            read_request(&mut stream);
            let _ = stream.write_all(b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n");
        }
        "badxml" => {
            read_request(&mut stream);
            answer(
                &mut stream,
                "text/xml",
                "<?xml version='1.0'?><methodResponse><oops/>",
            );
            std::thread::sleep(Duration::from_secs(5));
        }
        "status500" => {
            read_request(&mut stream);
            let body = "<html><body>Internal Server Error</body></html>";
            let reply = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
            std::thread::sleep(Duration::from_secs(5));
        }
        "reset" => {
            let mut one = [0u8; 1];
            let _ = stream.read(&mut one);
            std::thread::sleep(Duration::from_millis(50));
            // Dropping with unread bytes makes the kernel answer with RST.
        }
        other => panic!("unknown mode {other}"),
    }
}
