//! A local HTTP server for tests of network sources: fixed files at fixed paths (each with a
//! fixed `Last-Modified`, an `ETag` of its content and any extra headers a test needs), and
//! git repositories over git's smart HTTP protocol (`git http-backend` run as a CGI program
//! per request). It listens on 127.0.0.1 at a free port, answers each connection on a
//! thread of its own with deadlines on every read, write and CGI run, and stops when
//! dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `Last-Modified` of every served file: 2023-01-02 15:04:05 UTC, so the mtimes a download
/// gets (and `SOURCE_DATE_EPOCH=context` of an HTTP context) never depend on the day the
/// test runs.
pub const LAST_MODIFIED: &str = "Mon, 02 Jan 2023 15:04:05 GMT";
/// [`LAST_MODIFIED`] in seconds since the Unix epoch.
pub const LAST_MODIFIED_EPOCH: i64 = 1_672_671_845;

/// How long one connection may take to send its request or receive its answer, and one
/// `git http-backend` run may last: a stuck client or backend never holds a thread for long.
const IO_DEADLINE: Duration = Duration::from_secs(60);
/// The largest request head or body the server reads (a git negotiation is a few KiB).
const MAX_REQUEST: usize = 8 << 20;

/// One file the server answers with.
#[derive(Debug, Clone)]
pub struct ServedFile {
    pub content: Vec<u8>,
    /// Headers beyond `Content-Length` and `ETag` (e.g. `Content-Disposition`); a
    /// `Last-Modified` here replaces [`LAST_MODIFIED`], and an empty value sends none.
    pub headers: Vec<(String, String)>,
}

/// What a request asked for, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub user_agent: Option<String>,
}

struct Shared {
    files: BTreeMap<String, ServedFile>,
    /// The directory whose repositories `/git/NAME.git/...` serves, if any.
    git_root: Option<PathBuf>,
    requests: Mutex<Vec<RequestRecord>>,
}

/// The running server; stopped (listener closed, accept thread joined) on drop.
pub struct HttpServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `files` (request path, e.g. `/foo` or `/`, to its file) and, when `git_root` is
    /// given, each repository `git_root/NAME.git` (a work tree or a bare one) at
    /// `/git/NAME.git`.
    pub fn start(
        files: BTreeMap<String, ServedFile>,
        git_root: Option<PathBuf>,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            files,
            git_root,
            requests: Mutex::new(Vec::new()),
        });
        let accept = {
            let stop = Arc::clone(&stop);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let _ = serve(stream, &shared);
                    });
                }
            })
        };
        Ok(HttpServer {
            address,
            stop,
            shared,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(5));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string())
}

/// Reads one request (head, and a body by `Content-Length` or chunked), bounded in size.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Request> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words
        .next()
        .ok_or_else(|| invalid("empty request"))?
        .to_string();
    let target = words
        .next()
        .ok_or_else(|| invalid("no request target"))?
        .to_string();
    let mut headers = Vec::new();
    let mut head_size = line.len();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Err(invalid("request head ended early"));
        }
        head_size += h.len();
        if head_size > MAX_REQUEST {
            return Err(invalid("request head too large"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = request.header("Content-Length") {
        let length: usize = length.parse().map_err(|_| invalid("bad Content-Length"))?;
        if length > MAX_REQUEST {
            return Err(invalid("request body too large"));
        }
        request.body.resize(length, 0);
        reader.read_exact(&mut request.body)?;
    } else if request
        .header("Transfer-Encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = size.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // The trailer, up to its blank line.
                let mut t = String::new();
                while reader.read_line(&mut t)? > 2 {
                    t.clear();
                }
                break;
            }
            if request.body.len() + size > MAX_REQUEST {
                return Err(invalid("request body too large"));
            }
            let start = request.body.len();
            request.body.resize(start + size, 0);
            reader.read_exact(&mut request.body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    }
    Ok(request)
}

/// Answers one connection (one request; the connection is closed after it).
fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_DEADLINE))?;
    stream.set_write_timeout(Some(IO_DEADLINE))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = read_request(&mut reader)?;
    let (path, query) = match request.target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (request.target.clone(), String::new()),
    };
    if let Ok(mut log) = shared.requests.lock() {
        log.push(RequestRecord {
            method: request.method.clone(),
            path: request.target.clone(),
            user_agent: request.header("User-Agent").map(str::to_string),
        });
    }
    let (status, headers, body) = match (&shared.git_root, path.strip_prefix("/git/")) {
        (Some(root), Some(_)) => git_backend(root, &request, &path["/git".len()..], &query),
        _ => static_file(shared, &request, &path),
    };
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut stream = stream;
    stream.write_all(out.as_bytes())?;
    if request.method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

/// A 64-bit FNV-1a hash in hex: a stable ETag for a file's content.
fn fnv_hex(data: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

type Answer = (String, Vec<(String, String)>, Vec<u8>);

fn plain(status: &str, text: &str) -> Answer {
    (
        status.to_string(),
        vec![("Content-Type".into(), "text/plain".into())],
        text.as_bytes().to_vec(),
    )
}

fn static_file(shared: &Shared, request: &Request, path: &str) -> Answer {
    if request.method != "GET" && request.method != "HEAD" {
        return plain("405 Method Not Allowed", "GET or HEAD only\n");
    }
    let Some(file) = shared.files.get(path) else {
        return plain("404 Not Found", "404 page not found\n");
    };
    let etag = format!("\"{}\"", fnv_hex(&file.content));
    if request.header("If-None-Match") == Some(etag.as_str()) {
        return (
            "304 Not Modified".into(),
            vec![("ETag".into(), etag)],
            Vec::new(),
        );
    }
    let mut headers = vec![
        (
            "Content-Type".to_string(),
            "application/octet-stream".to_string(),
        ),
        ("ETag".to_string(), etag),
    ];
    // A file's own `Last-Modified` replaces the fixed one; an empty one sends none.
    let own = |name: &str| {
        file.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    if !own("Last-Modified") {
        headers.push(("Last-Modified".to_string(), LAST_MODIFIED.to_string()));
    }
    headers.extend(file.headers.iter().filter(|(_, v)| !v.is_empty()).cloned());
    ("200 OK".into(), headers, file.content.clone())
}

/// Runs `git http-backend` for one request (CGI: the request in the environment and on
/// stdin, the answer's headers and body on stdout), killed at the deadline.
fn git_backend(root: &std::path::Path, request: &Request, path_info: &str, query: &str) -> Answer {
    if path_info.split('/').any(|c| c == "..") {
        return plain("400 Bad Request", "no .. in paths\n");
    }
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &request.method)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // A fetch of a commit id that no ref names (`#<commit>`, `?commit=`) is allowed.
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "uploadpack.allowAnySHA1InWant")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("GIT_CONFIG_KEY_1", "safe.directory")
        .env("GIT_CONFIG_VALUE_1", "*")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = request.header("Content-Type") {
        command.env("CONTENT_TYPE", t);
    }
    if let Some(e) = request.header("Content-Encoding") {
        command.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(p) = request.header("Git-Protocol") {
        command.env("GIT_PROTOCOL", p);
    }
    let output = (|| -> std::io::Result<Vec<u8>> {
        let mut child = command.spawn()?;
        let mut stdin = child.stdin.take();
        let body = request.body.clone();
        let feeder = std::thread::spawn(move || {
            if let Some(stdin) = stdin.as_mut() {
                let _ = stdin.write_all(&body);
            }
        });
        let mut stdout = child.stdout.take().ok_or_else(|| invalid("no stdout"))?;
        let reader = std::thread::spawn(move || {
            let mut data = Vec::new();
            let _ = stdout.read_to_end(&mut data);
            data
        });
        let started = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if started.elapsed() > IO_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                return Err(invalid("git http-backend did not finish in time"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = feeder.join();
        reader
            .join()
            .map_err(|_| invalid("reading git http-backend"))
    })();
    let Ok(output) = output else {
        return plain("500 Internal Server Error", "git http-backend failed\n");
    };
    // The CGI answer: headers (`Status:` among them), a blank line, the body.
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            output
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        return plain(
            "500 Internal Server Error",
            "git http-backend gave no headers\n",
        );
    };
    let mut status = "200 OK".to_string();
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(&output[..head_end]).lines() {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("Status") {
                status = v.to_string();
            } else {
                headers.push((k.to_string(), v.to_string()));
            }
        }
    }
    (status, headers, output[body_start..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, method: &str, path: &str) -> String {
        let address = url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: t/1\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn files_are_served_with_fixed_headers_and_the_rest_is_404() {
        let files = BTreeMap::from([(
            "/foo".to_string(),
            ServedFile {
                content: b"content1".to_vec(),
                headers: vec![(
                    "Content-Disposition".into(),
                    "attachment; filename=x".into(),
                )],
            },
        )]);
        let mut files = files;
        files.insert(
            "/bare".to_string(),
            ServedFile {
                content: b"x".to_vec(),
                headers: vec![("Last-Modified".into(), String::new())],
            },
        );
        let server = HttpServer::start(files, None).unwrap();
        let bare = get(&server.url(), "GET", "/bare");
        assert!(
            bare.starts_with("HTTP/1.1 200") && !bare.contains("Last-Modified"),
            "{bare}"
        );
        let answer = get(&server.url(), "GET", "/foo");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains(&format!("Last-Modified: {LAST_MODIFIED}\r\n")),
            "{answer}"
        );
        assert!(
            answer.contains("Content-Disposition: attachment; filename=x\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\ncontent1"), "{answer}");
        let head = get(&server.url(), "HEAD", "/foo");
        assert!(
            head.contains("Content-Length: 8\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(get(&server.url(), "GET", "/../etc/passwd").starts_with("HTTP/1.1 404"));
        assert!(get(&server.url(), "POST", "/foo").starts_with("HTTP/1.1 405"));
        let requests = server.requests();
        assert_eq!(requests.len(), 5);
        assert_eq!(
            (requests[2].method.as_str(), requests[2].path.as_str()),
            ("HEAD", "/foo")
        );
        assert_eq!(requests[1].user_agent.as_deref(), Some("t/1"));
        // Stopping closes the port.
        let url = server.url();
        drop(server);
        assert!(TcpStream::connect(url.trim_start_matches("http://")).is_err());
    }

    #[test]
    fn a_client_that_sends_nothing_does_not_stop_others() {
        let server = HttpServer::start(BTreeMap::new(), None).unwrap();
        let _silent = TcpStream::connect(server.url().trim_start_matches("http://")).unwrap();
        assert!(get(&server.url(), "GET", "/").starts_with("HTTP/1.1 404"));
    }
}
