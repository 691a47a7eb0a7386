//! The HTTP/1.1 framing of supervisord's XML-RPC: one POST to `/RPC2`, one `Content-Length`
//! framed response. Strict where supervisord is strict (CRLF, `Name: value`, a body length
//! that is never 0); defensive where it is sloppy (a `text/xml` check before parsing, a size cap,
//! bytes beyond the announced length make the connection unusable).

use std::fmt;

use base64::Engine;

use crate::config::supervisord_address::Credentials;

pub fn encode_request(host: &str, credentials: Option<&Credentials>, body: &str) -> Vec<u8> {
    let mut head = format!("POST /RPC2 HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(credentials) = credentials {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.user, credentials.password));
        head.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    head.push_str(&format!(
        "Content-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    let mut request = head.into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

#[derive(Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// `Content-Type` is `text/xml` (what supervisord sends for every XML-RPC answer).
    pub is_xml: bool,
    /// The connection may carry another request.
    pub reusable: bool,
    pub body: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Incomplete,
    Complete(HttpResponse),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    Malformed(&'static str),
    /// The head does not end within the cap (its size in bytes).
    TooLarge(usize),
    /// The head announces a response of `size` bytes (head included), over the `limit`.
    ReplyTooLarge {
        size: usize,
        limit: usize,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed HTTP response: {what}"),
            Self::TooLarge(cap) => write!(f, "response larger than {cap} bytes"),
            Self::ReplyTooLarge { size, limit } => {
                write!(f, "response of {size} bytes, larger than {limit} bytes")
            }
        }
    }
}

const MAX_HEAD: usize = 8 * 1024;

/// Parses what has arrived so far. `received` holds every byte read on this exchange.
pub fn parse_response(received: &[u8], max_size: usize) -> Result<Progress, HttpError> {
    // The head, its blank line included, fits the cap; checked the same way whether it
    // arrives at once or in pieces (a head that has not ended at the cap will not fit it).
    let head_cap = MAX_HEAD.min(max_size);
    let Some(head_end) = find(received, b"\r\n\r\n") else {
        if received.len() >= head_cap {
            return Err(HttpError::TooLarge(head_cap));
        }
        return Ok(Progress::Incomplete);
    };
    if head_end + 4 > head_cap {
        return Err(HttpError::TooLarge(head_cap));
    }
    let head = std::str::from_utf8(&received[..head_end])
        .map_err(|_| HttpError::Malformed("non-UTF-8 header"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let reusable_by_version = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HttpError::Malformed("bad status line")),
    };
    let status = parts
        .next()
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(HttpError::Malformed("bad status code"))?;

    let mut content_length = None;
    let mut is_xml = false;
    let mut closes = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header line without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
            if content_length
                .replace(length)
                .is_some_and(|first| first != length)
            {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            is_xml = value
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/xml"));
        } else if name.eq_ignore_ascii_case("connection") {
            closes = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed("unexpected Transfer-Encoding"));
        }
    }
    let length = content_length.ok_or(HttpError::Malformed("no Content-Length"))?;
    let body_start = head_end + 4;
    if length > max_size.saturating_sub(body_start) {
        return Err(HttpError::ReplyTooLarge {
            size: body_start.saturating_add(length),
            limit: max_size,
        });
    }
    let body_end = body_start + length;
    if received.len() < body_end {
        return Ok(Progress::Incomplete);
    }
    Ok(Progress::Complete(HttpResponse {
        status,
        is_xml,
        // Extra bytes mean the length was wrong (supervisord counts characters for non-ASCII
        // text): the stream is out of step, so the connection is not used again.
        reusable: reusable_by_version && !closes && received.len() == body_end,
        body: received[body_start..body_end].to_vec(),
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_request_supervisord_accepts() {
        let credentials = Credentials {
            user: "admin".into(),
            password: "s3cret".into(),
        };
        let request = encode_request("127.0.0.1:19001", Some(&credentials), "<x/>");
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:19001\r\n\
             Authorization: Basic YWRtaW46czNjcmV0\r\nContent-Type: text/xml\r\n\
             Content-Length: 4\r\n\r\n<x/>"
        );
        let plain = String::from_utf8(encode_request("localhost", None, "<x/>")).unwrap();
        assert!(!plain.contains("Authorization"));
    }

    fn complete(raw: &[u8]) -> HttpResponse {
        match parse_response(raw, 1 << 20).unwrap() {
            Progress::Complete(response) => response,
            Progress::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn frames_by_content_length_and_waits_for_more() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..raw.len() {
            assert_eq!(
                parse_response(&raw[..cut], 1 << 20),
                Ok(Progress::Incomplete)
            );
        }
        let response = complete(raw);
        assert_eq!(response.status, 200);
        assert!(response.is_xml && response.reusable);
        assert_eq!(response.body, b"hello");
    }

    #[test]
    fn marks_what_cannot_carry_another_request() {
        assert!(!complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").reusable);
        assert!(
            !complete(
                b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
            .reusable
        );
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab").reusable);
        assert!(
            !complete(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n")
                .is_xml
        );
    }

    #[test]
    fn refuses_garbage_and_oversized_responses() {
        for raw in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(
                parse_response(raw, 1 << 20).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n";
        assert_eq!(
            parse_response(head, 4096),
            Err(HttpError::ReplyTooLarge {
                size: head.len() + 999_999,
                limit: 4096
            })
        );
        // The head and the body together make the size that counts.
        let exact = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        assert!(matches!(
            parse_response(exact, exact.len()),
            Ok(Progress::Complete(_))
        ));
        assert_eq!(
            parse_response(exact, exact.len() - 1),
            Err(HttpError::ReplyTooLarge {
                size: exact.len(),
                limit: exact.len() - 1
            })
        );
        assert_eq!(
            parse_response(&vec![b'a'; 10_000], 4096),
            Err(HttpError::TooLarge(4096))
        );
    }

    /// Found by the invariant of the http_exchange fuzz target (`core::fuzzing`), with a long
    /// head written by hand: a head longer than the cap was refused when it arrived in pieces
    /// but accepted when it arrived in one read.
    #[test]
    fn refuses_a_long_head_however_it_arrives() {
        let mut raw = b"HTTP/1.1 200 OK\r\nX-Padding: ".to_vec();
        raw.resize(MAX_HEAD + 100, b'a');
        raw.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        for cut in [MAX_HEAD, MAX_HEAD + 1, raw.len() - 1, raw.len()] {
            assert_eq!(
                parse_response(&raw[..cut], 1 << 20),
                Err(HttpError::TooLarge(MAX_HEAD)),
                "{cut} bytes"
            );
        }
        let mut fits = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: ".to_vec();
        fits.resize(MAX_HEAD - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse_response(&fits, 1 << 20),
            Ok(Progress::Complete(_))
        ));
    }
}
