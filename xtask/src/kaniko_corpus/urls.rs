//! Stand-ins for the URLs the corpus's `ADD <url>` lines download (GitHub releases, raw
//! GitHub files, httpstat.us), which this machine cannot reach: the Dockerfile's URLs are
//! rewritten to a local HTTP server that answers every path with a small body of its own
//! (the same bytes for both builders, not the real file), and `httpstat.us/404` with 404.
//! The cases then compare what ADD makes of a download (name, mode, owner, layer), which is
//! what they test; the downloaded bytes themselves are not what is compared.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

/// The hosts rewritten: every URL the corpus's ADD lines name is on one of them.
pub const HOSTS: &[&str] = &["github.com", "raw.githubusercontent.com", "httpstat.us"];

/// One `Last-Modified` for every answer: both builders give a download that mtime.
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

/// The Dockerfile text with `https://HOST/` and `http://HOST/` of [`HOSTS`] turned into
/// `http://SERVER/HOST/`.
pub fn rewrite_urls(dockerfile: &str, server: &str) -> String {
    let mut out = dockerfile.to_string();
    for host in HOSTS {
        for scheme in ["https", "http"] {
            out = out.replace(
                &format!("{scheme}://{host}/"),
                &format!("http://{server}/{host}/"),
            );
        }
    }
    out
}

/// The status and body for a request path (`/HOST/...`).
fn answer(path: &str) -> (u16, Vec<u8>) {
    let path = path.split('?').next().unwrap_or(path);
    if path.starts_with("/httpstat.us/404") {
        return (404, b"404 Not Found\n".to_vec());
    }
    match path.strip_prefix('/') {
        Some(rest) if HOSTS.iter().any(|h| rest.starts_with(&format!("{h}/"))) => {
            (200, format!("stand-in for https://{rest}\n").into_bytes())
        }
        _ => (404, b"not a stand-in URL\n".to_vec()),
    }
}

/// Serves one connection: a GET or HEAD, answered and closed.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers are read and dropped: no answer depends on them.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let (status, body) = match method {
        "GET" | "HEAD" => answer(path),
        _ => (405, Vec::new()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend(body);
    }
    let mut stream = stream;
    stream.write_all(&response)
}

/// Starts the server on 127.0.0.1 (a thread per connection, for as long as the run lasts)
/// and returns its `HOST:PORT`.
pub fn start() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn urls_of_the_known_hosts_are_rewritten_and_nothing_else() {
        let text = "ADD https://github.com/a/b.tar.gz /x\n\
                    ENV URL=https://raw.githubusercontent.com/k/README.md\n\
                    ADD https://httpstat.us/404 .\n\
                    RUN echo https://example.com/x\n";
        let out = rewrite_urls(text, "127.0.0.1:9");
        assert!(out.contains("ADD http://127.0.0.1:9/github.com/a/b.tar.gz /x"));
        assert!(out.contains("URL=http://127.0.0.1:9/raw.githubusercontent.com/k/README.md"));
        assert!(out.contains("http://127.0.0.1:9/httpstat.us/404"));
        assert!(out.contains("https://example.com/x"), "{out}");
    }

    fn get(address: &str, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn the_server_answers_stand_ins_404_and_refuses_the_rest() {
        let address = start().unwrap();
        let ok = get(
            &address,
            "GET",
            "/github.com/o/r/releases/download/v1/x.tar.gz",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(&format!("Last-Modified: {LAST_MODIFIED}")));
        assert!(ok.ends_with("stand-in for https://github.com/o/r/releases/download/v1/x.tar.gz\n"));
        let head = get(&address, "HEAD", "/github.com/o/r");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(get(&address, "GET", "/httpstat.us/404").starts_with("HTTP/1.1 404"));
        assert!(get(&address, "GET", "/elsewhere.org/x").starts_with("HTTP/1.1 404"));
        assert!(get(&address, "GET", "/github.com/../../etc/passwd")
            .contains("stand-in for https://github.com/../../etc/passwd"));
        assert!(get(&address, "POST", "/github.com/x").starts_with("HTTP/1.1 405"));
    }
}
