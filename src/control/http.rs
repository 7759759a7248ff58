//! The control API's HTTP/1.1 server: one request per connection (`Connection: close`),
//! over plain TCP or TLS (rustls), a thread per connection and at most [`MAX_CONNECTIONS`]
//! at once, every connection bounded by [`DEADLINE`] (a client that dribbles bytes is cut
//! off). Deliberately strict: a request line and headers of at most 8 KiB, a body only by
//! `Content-Length` (at most 64 KiB), no chunked bodies, no folded or duplicate security
//! headers. What a request may do is decided in `api`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::shard::WAIT_BOUND;

/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a connection may take, TLS handshake, request and answer included.
pub const DEADLINE: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 8192;
/// Largest request body (an object of the configuration API, a line's prefixes included).
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Header names lowercased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` octets).
    pub body: Vec<u8>,
}

impl Request {
    /// The header `name` (lowercase): `Ok(None)` when absent, `Err` when sent twice.
    pub fn header(&self, name: &str) -> Result<Option<&str>, String> {
        let mut found = self.headers.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v.as_str());
        match found.next() {
            Some(_) => Err(format!("the {name} header is sent twice")),
            None => Ok(first),
        }
    }
}

/// An answer: status, JSON body (or text), extra headers.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The JSON document sent (unless `text` is set).
    pub body: serde_json::Value,
    /// A body other than JSON: its content type and text (`/metrics`).
    pub text: Option<(&'static str, String)>,
    /// Extra headers (`WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            body,
            text: None,
            headers: Vec::new(),
        }
    }

    /// A text answer of content type `content_type`.
    pub fn text(status: u16, content_type: &'static str, text: String) -> Self {
        Self {
            text: Some((content_type, text)),
            ..Self::json(status, serde_json::Value::Null)
        }
    }

    /// `{"error": msg}`.
    pub fn error(status: u16, msg: impl Into<String>) -> Self {
        Self::json(status, serde_json::json!({ "error": msg.into() }))
    }
}

/// Where a request came from and arrived.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client.
    pub client: SocketAddr,
    /// The local address it connected to.
    pub local: SocketAddr,
    /// Over TLS.
    pub tls: bool,
}

/// The request handler: `Peer`, the request, the answer.
pub type Handler = dyn Fn(&Peer, &Request) -> Response + Send + Sync;

/// Gives the TLS configuration for a new connection (`None`: plain HTTP), read per
/// connection so a reload applies to the next one.
pub type TlsSource = dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync;

/// A running listener; [`Server::stop`] ends its accept loop.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `listener` on a thread of its own until [`Server::stop`] or `global_stop`.
    pub fn start(
        listener: TcpListener,
        handler: Arc<Handler>,
        tls: Arc<TlsSource>,
        global_stop: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control-api".into())
            .spawn(move || accept_loop(listener, handler, tls, st, global_stop))?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the listener (connections being served finish).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    tls: Arc<TlsSource>,
    stop: Arc<AtomicBool>,
    global_stop: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) && !global_stop.load(Ordering::Relaxed) {
        if !crate::sys::wait_readable(&listener, WAIT_BOUND) {
            continue;
        }
        let (stream, client) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                warn!("control API: accept failed: {e}");
                std::thread::sleep(WAIT_BOUND);
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            warn!(client = %client, "control API: {MAX_CONNECTIONS} connections open, closing a new one");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (h, t, a) = (handler.clone(), tls.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(stream, client, &*h, (*t)()) {
                    debug!(client = %client, "control API connection: {e}");
                }
                a.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::Relaxed);
            warn!("control API: cannot start a connection thread: {e}");
        }
    }
}

/// A connection, plain or TLS, whose socket timeouts follow the deadline.
trait Conn: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    handler: &Handler,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(DEADLINE))?;
    let _ = stream.set_nodelay(true);
    let peer = Peer {
        client,
        local: stream.local_addr()?,
        tls: tls.is_some(),
    };
    match tls {
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
            let mut s = rustls::StreamOwned::new(conn, stream);
            exchange(&mut s, &peer, handler, deadline)?;
            s.conn.send_close_notify();
            s.flush()
        }
        None => {
            let mut s = stream;
            exchange(&mut s, &peer, handler, deadline)
        }
    }
}

fn exchange(
    s: &mut impl Conn,
    peer: &Peer,
    handler: &Handler,
    deadline: Instant,
) -> io::Result<()> {
    let resp = match read_request(s, deadline) {
        Ok(req) => handler(peer, &req),
        Err(Bad::Io(e)) => return Err(e),
        Err(Bad::Request(status, msg)) => {
            warn!(client = %peer.client, status, "control API: malformed request: {msg}");
            Response::error(status, msg)
        }
    };
    write_response(s, &resp, deadline)
}

enum Bad {
    Io(io::Error),
    Request(u16, String),
}

impl From<io::Error> for Bad {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn bad(status: u16, msg: impl Into<String>) -> Bad {
    Bad::Request(status, msg.into())
}

/// Reads into `buf` once, within the deadline.
fn read_some(s: &mut impl Conn, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    s.tcp().set_read_timeout(Some(left))?;
    match s.read(buf)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before a whole request",
        )),
        n => Ok(n),
    }
}

fn read_request(s: &mut impl Conn, deadline: Instant) -> Result<Request, Bad> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad(431, "request line and headers exceed 8 KiB"));
        }
        let n = read_some(s, &mut chunk, deadline)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| bad(400, "headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(bad(400, "malformed request line"));
    };
    if !matches!(*version, "HTTP/1.1" | "HTTP/1.0")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(bad(400, "malformed request line"));
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            return Err(bad(400, "folded header lines are not accepted"));
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(bad(400, "a header line without ':'"));
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(bad(400, "malformed header name"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(bad(400, "control characters in a header"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .map_err(|e| bad(400, e))?
        .is_some()
    {
        return Err(bad(
            400,
            "Transfer-Encoding is not accepted: send the body with Content-Length",
        ));
    }
    let len = match req.header("content-length").map_err(|e| bad(400, e))? {
        None => 0,
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse::<usize>().unwrap_or(usize::MAX)
        }
        Some(_) => return Err(bad(400, "malformed Content-Length")),
    };
    if len > MAX_BODY {
        return Err(bad(413, format!("the body exceeds {MAX_BODY} octets")));
    }
    let mut body = buf[head_end + 4..].to_vec();
    if body.len() < len
        && req
            .header("expect")
            .ok()
            .flatten()
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        s.flush()?;
    }
    while body.len() < len {
        let n = read_some(s, &mut chunk, deadline)?;
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(s: &mut impl Conn, resp: &Response, deadline: Instant) -> io::Result<()> {
    let json;
    let (content_type, body) = match &resp.text {
        Some((ct, text)) => (*ct, text.as_str()),
        None => {
            json = serde_json::to_string_pretty(&resp.body).unwrap_or_default() + "\n";
            ("application/json", json.as_str())
        }
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        body.len()
    );
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    s.tcp().set_write_timeout(Some(left))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}
