//! A minimal HTTP/1.1 client over a raw socket: it sends header bytes exactly as given
//! (non-UTF-8 included), which ordinary clients refuse to do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of a header that may repeat (`set-cookie`), in order.
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A keep-alive connection that reconnects when the server closes it.
pub struct Client {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(port: u16) -> Self {
        Client { port, conn: None }
    }

    pub fn get(&mut self, path: &[u8], headers: &[(&str, &[u8])]) -> Response {
        self.send(b"GET", path, headers)
    }

    pub fn send(&mut self, method: &[u8], path: &[u8], headers: &[(&str, &[u8])]) -> Response {
        self.send_body(method, path, headers, None)
    }

    /// A request with a body (`content-length` is added).
    pub fn post(&mut self, path: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Response {
        self.send_body(b"POST", path, headers, Some(body))
    }

    fn send_body(
        &mut self,
        method: &[u8],
        path: &[u8],
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
    ) -> Response {
        let mut req = Vec::new();
        req.extend_from_slice(method);
        req.push(b' ');
        req.extend_from_slice(path);
        req.extend_from_slice(b" HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            req.extend_from_slice(b"host: localhost\r\n");
        }
        for (n, v) in headers {
            req.extend_from_slice(n.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
        }
        if let Some(b) = body {
            req.extend_from_slice(format!("content-length: {}\r\n", b.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            req.extend_from_slice(b);
        }
        // One retry: a kept-alive connection may have been closed by the server meanwhile.
        for attempt in 0..2 {
            match self.try_send(&req) {
                Ok(r) => return r,
                Err(e) if attempt == 0 => {
                    self.conn = None;
                    let _ = e;
                }
                Err(e) => panic!("request to 127.0.0.1:{} failed: {e}", self.port),
            }
        }
        unreachable!()
    }

    fn try_send(&mut self, req: &[u8]) -> std::io::Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().unwrap();
        conn.get_mut().write_all(req)?;
        let mut line = Vec::new();
        if conn.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status_line = String::from_utf8_lossy(&line).to_string();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            conn.read_until(b'\n', &mut line)?;
            let l = line.strip_suffix(b"\r\n").unwrap_or(&line);
            if l.is_empty() {
                break;
            }
            if let Some(i) = l.iter().position(|&c| c == b':') {
                let name = String::from_utf8_lossy(&l[..i]).to_ascii_lowercase();
                let value = l[i + 1..]
                    .strip_prefix(b" ")
                    .unwrap_or(&l[i + 1..])
                    .to_vec();
                headers.push((name, value));
            }
        }
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body)?;
        let close = headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case(b"close"));
        if close {
            self.conn = None;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// `GET path` on a fresh connection, for admin endpoints (whose answers may be chunked).
pub fn get_text(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((status, body.to_string()));
    }
    let mut rest = body;
    let mut decoded = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        decoded.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok((status, decoded))
}
