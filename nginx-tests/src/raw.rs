//! Clients below the harness's one-request `request`: a keep-alive HTTP/1.x connection that
//! sends raw bytes and reads framed responses one by one (to count how many answers a request
//! got), an HTTP/2 connection written frame by frame (several streams on one connection, bodies,
//! resets), and curl over HTTP/2 for single requests.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Response;

/// One client connection to nginx, kept open across requests.
pub struct RawConnection {
    stream: TcpStream,
    /// Bytes read but not yet parsed as a response.
    pending: Vec<u8>,
}

impl RawConnection {
    pub fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to nginx");
    }

    /// Ends the client's side of the connection.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The next complete final response (interim `1xx` ones are skipped), or `None` if none
    /// came within `timeout` ([`crate::scaled`]) or the connection ended first.
    pub fn next_response(&mut self, timeout: Duration) -> Option<Response> {
        let deadline = Instant::now() + crate::scaled(timeout);
        loop {
            if let Some((response, used)) = parse_framed(&self.pending) {
                self.pending.drain(..used);
                if (100..200).contains(&response.status) {
                    continue;
                }
                return Some(response);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buffer = [0u8; 16384];
            match self.stream.read(&mut buffer) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buffer[..n]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// Ends the client's side of the connection and reads until nginx closes its side (a
    /// keep-alive connection is closed once nginx has answered everything it was sent);
    /// returns whatever nginx sent that is not part of a response read so far (empty when it
    /// sent nothing else). Fails if nginx does not close the connection within 10 s (scaled).
    pub fn rest_until_closed(mut self) -> Vec<u8> {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(10));
        let mut buffer = [0u8; 16384];
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("nginx did not close the connection"));
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buffer) {
                Ok(0) => return std::mem::take(&mut self.pending),
                Ok(n) => self.pending.extend_from_slice(&buffer[..n]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("nginx did not close the connection")
                }
                // A reset after everything was read: nothing more came.
                Err(_) => return std::mem::take(&mut self.pending),
            }
        }
    }
}

/// A response at the start of `raw`, framed by `Content-Length` or chunked, with the number of
/// bytes it took; `None` while incomplete.
fn parse_framed(raw: &[u8]) -> Option<(Response, usize)> {
    let head_end = raw.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end - 4]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_ascii_lowercase())
    };
    let (body, end) = if (100..200).contains(&status) {
        (Vec::new(), head_end)
    } else if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = head_end;
        loop {
            let line_end = raw[at..].windows(2).position(|window| window == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&raw[at..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            at = line_end + 2;
            if size == 0 {
                if raw.len() < at + 2 {
                    return None;
                }
                break (body, at + 2);
            }
            if raw.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&raw[at..at + size]);
            at += size + 2;
        }
    } else {
        let length: usize = header("content-length")
            .map(|value| value.parse().expect("content-length"))
            .unwrap_or(0);
        if raw.len() < head_end + length {
            return None;
        }
        (raw[head_end..head_end + length].to_vec(), head_end + length)
    };
    Some((
        Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
        },
        end,
    ))
}

/// An HTTP/2 connection without TLS (prior knowledge), written frame by frame: enough to open
/// GET streams, reset one, and read the status of each answered stream.
pub struct H2Connection {
    stream: TcpStream,
    pending: Vec<u8>,
}

const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
/// RST_STREAM's CANCEL: the client no longer wants the stream.
const CANCEL: u32 = 0x8;

impl H2Connection {
    pub fn open(port: u16) -> Self {
        let mut connection = Self {
            stream: TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx"),
            pending: Vec::new(),
        };
        connection
            .stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        connection.frame(FRAME_SETTINGS, 0, 0, &[]);
        connection
    }

    fn frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&stream_id.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).expect("send frame");
    }

    /// Opens stream `stream_id` (odd, increasing) with `GET path`, no body.
    pub fn get(&mut self, stream_id: u32, path: &str) {
        self.request(stream_id, "GET", path, None);
    }

    /// Opens stream `stream_id` with `method path` and, if given, a body in one DATA frame.
    pub fn request(&mut self, stream_id: u32, method: &str, path: &str, body: Option<&[u8]>) {
        // HPACK: `:method GET`/`POST` (static 2, 3) or a literal value of name 1... (2),
        // `:scheme http` (6), then literal values without indexing for `:path` (name 4),
        // `:authority` (name 1) and `content-length` (name 28).
        let mut block = match method {
            "GET" => vec![0x82],
            "POST" => vec![0x83],
            _ => {
                let mut literal = vec![0x02, method.len() as u8];
                literal.extend_from_slice(method.as_bytes());
                literal
            }
        };
        block.push(0x86);
        let length = body.map(|body| body.len().to_string());
        let mut literals = vec![(0x04u8, path), (0x01, "localhost")];
        if let Some(length) = &length {
            literals.push((0x0f, length.as_str()));
        }
        for (name_index, value) in literals {
            assert!(value.len() < 127);
            if name_index == 0x0f {
                // Name index 28 does not fit the 4-bit prefix: 15, then 28 - 15.
                block.extend_from_slice(&[0x0f, 28 - 15]);
            } else {
                block.push(name_index);
            }
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        let end_stream = if body.is_none() { FLAG_END_STREAM } else { 0 };
        self.frame(
            FRAME_HEADERS,
            end_stream | FLAG_END_HEADERS,
            stream_id,
            &block,
        );
        if let Some(body) = body {
            self.frame(FRAME_DATA, FLAG_END_STREAM, stream_id, body);
        }
    }

    pub fn reset(&mut self, stream_id: u32) {
        self.frame(FRAME_RST_STREAM, 0, stream_id, &CANCEL.to_be_bytes());
    }

    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The `:status` of every stream that got a HEADERS frame within `timeout`, as
    /// `(stream id, status)`, until `want` streams were answered. Only the statuses nginx
    /// encodes from HPACK's static table (200, 204, 206, 304, 400, 404, 500) or as a literal
    /// are decoded; that is all of them.
    pub fn statuses(&mut self, want: usize, timeout: Duration) -> Vec<(u32, u16)> {
        let deadline = Instant::now() + crate::scaled(timeout);
        let mut answered = Vec::new();
        while answered.len() < want {
            while self.pending.len() >= 9 {
                let length =
                    u32::from_be_bytes([0, self.pending[0], self.pending[1], self.pending[2]])
                        as usize;
                if self.pending.len() < 9 + length {
                    break;
                }
                let kind = self.pending[3];
                let flags = self.pending[4];
                let stream_id =
                    u32::from_be_bytes(self.pending[5..9].try_into().unwrap()) & 0x7fff_ffff;
                let payload: Vec<u8> = self.pending[9..9 + length].to_vec();
                self.pending.drain(..9 + length);
                if kind == FRAME_SETTINGS && flags & FLAG_ACK == 0 {
                    self.frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]);
                }
                if kind == FRAME_HEADERS {
                    answered.push((stream_id, header_status(&payload, flags)));
                }
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buffer = [0u8; 16384];
            match self.stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.pending.extend_from_slice(&buffer[..n]),
            }
        }
        answered
    }
}

/// The `:status` that starts a HEADERS frame's block as nginx writes it.
fn header_status(payload: &[u8], flags: u8) -> u16 {
    const FLAG_PADDED: u8 = 0x8;
    const FLAG_PRIORITY: u8 = 0x20;
    let mut block = payload;
    if flags & FLAG_PADDED != 0 {
        block = &block[1..block.len() - payload[0] as usize];
    }
    if flags & FLAG_PRIORITY != 0 {
        block = &block[5..];
    }
    match block[0] {
        0x88 => 200,
        0x89 => 204,
        0x8a => 206,
        0x8b => 304,
        0x8c => 400,
        0x8d => 404,
        0x8e => 500,
        // A literal with name index 8 (`:status`), incrementally indexed or not.
        0x48 | 0x08 if block[1] == 3 => std::str::from_utf8(&block[2..5]).unwrap().parse().unwrap(),
        other => panic!("status not decoded: first byte {other:#x}"),
    }
}

/// curl over HTTP/2 without TLS (prior knowledge), one request (`args`: URL, method, data):
/// its status. One request per connection: curl 7.88 fails any second request on a reused
/// prior-knowledge connection ("Error in the HTTP2 framing layer", with plain nginx too), and
/// any request nginx answers before its body was sent; [`H2Connection`] covers those.
pub fn curl_h2(args: &[&str]) -> u16 {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--http2-prior-knowledge",
            "--max-time",
            "20",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (code, version) = text.split_once(' ').expect("curl's write-out");
    assert_eq!(version, "2", "curl did not speak HTTP/2: {output:?}");
    code.parse().expect("status")
}
