//! A proxy in front of the test registry that can tamper with responses: corrupt or truncate
//! blob downloads, or replace manifest answers. One request per connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::http::{read_request, write_response};

#[derive(Clone)]
pub enum Tamper {
    /// Flip one byte of every blob body (length unchanged).
    CorruptBlob,
    /// Send half of every blob body (ranged ones too), declaring the full length, then close.
    TruncateBlobAlways,
    /// Truncate only the first blob GET; Range requests go through untouched.
    TruncateBlobOnce,
    /// Answer every manifest GET with this content type and body.
    ReplaceManifest { content_type: String, body: Vec<u8> },
    /// Send half of the first blob GET and then stall with the connection open.
    StallBlobOnce,
    /// Answer the first `count` requests with `status` (and `Retry-After: 0`).
    FailFirst { count: usize, status: u16 },
    /// Refuse PUTs that carry a body (a registry that only takes chunked uploads).
    RefuseMonolithicPut,
    /// Redirect blob GETs to another server on this port (a different host for the client).
    RedirectBlobsTo(u16),
    /// Send this Authorization upstream, as a storage URL carrying its own signature would.
    InjectAuthorization(String),
}

pub struct TamperProxy {
    pub port: u16,
    /// Requests that carried a Range header.
    pub range_requests: Arc<AtomicUsize>,
    /// Requests that arrived with an Authorization header.
    pub authorized_requests: Arc<AtomicUsize>,
    /// All requests seen.
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TamperProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PASSED_HEADERS: &[&str] = &[
    "content-type",
    "docker-content-digest",
    "content-range",
    "accept-ranges",
    "www-authenticate",
    "location",
    "docker-distribution-api-version",
];

impl TamperProxy {
    pub async fn start(upstream_port: u16, tamper: Tamper) -> TamperProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let range_requests = Arc::new(AtomicUsize::new(0));
        let blob_gets = Arc::new(AtomicUsize::new(0));
        let ranges = range_requests.clone();
        let authorized_requests = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (authorized, all) = (authorized_requests.clone(), requests.clone());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (tamper, http, ranges, blob_gets) = (
                    tamper.clone(),
                    http.clone(),
                    ranges.clone(),
                    blob_gets.clone(),
                );
                let (authorized, all) = (authorized.clone(), all.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut stream).await else {
                        return;
                    };
                    let path = req.target.split('?').next().unwrap_or("").to_string();
                    let is_blob = path.contains("/blobs/sha256:") && req.method == "GET";
                    let is_manifest = path.contains("/manifests/") && req.method == "GET";
                    let seen = all.fetch_add(1, Ordering::SeqCst);
                    if req.header("authorization").is_some() {
                        authorized.fetch_add(1, Ordering::SeqCst);
                    }
                    match &tamper {
                        Tamper::FailFirst { count, status } if seen < *count => {
                            let headers = [("Retry-After".to_string(), "0".to_string())];
                            write_response(&mut stream, *status, &headers, b"busy", 4).await;
                            return;
                        }
                        Tamper::RefuseMonolithicPut
                            if req.method == "PUT" && !req.body.is_empty() =>
                        {
                            let body = br#"{"errors":[{"code":"UNSUPPORTED","message":"monolithic upload refused"}]}"#;
                            write_response(&mut stream, 405, &[], body, body.len()).await;
                            return;
                        }
                        Tamper::RedirectBlobsTo(port) if is_blob => {
                            let headers = [(
                                "Location".to_string(),
                                format!("http://127.0.0.1:{port}{}", req.target),
                            )];
                            write_response(&mut stream, 307, &headers, &[], 0).await;
                            return;
                        }
                        _ => {}
                    }
                    if let (true, Tamper::ReplaceManifest { content_type, body }) =
                        (is_manifest, &tamper)
                    {
                        let headers = [("Content-Type".to_string(), content_type.clone())];
                        write_response(&mut stream, 200, &headers, body, body.len()).await;
                        return;
                    }
                    let mut upstream = http.request(
                        req.method.parse().unwrap(),
                        format!("http://127.0.0.1:{upstream_port}{}", req.target),
                    );
                    for (name, value) in &req.headers {
                        let lower = name.to_ascii_lowercase();
                        if lower == "range" {
                            ranges.fetch_add(1, Ordering::SeqCst);
                        }
                        if ["range", "accept", "authorization", "content-type"]
                            .contains(&lower.as_str())
                        {
                            upstream = upstream.header(name, value);
                        }
                    }
                    // The registry builds upload Locations from Host: keep them pointing here.
                    upstream = upstream.header("host", format!("127.0.0.1:{port}"));
                    if let Tamper::InjectAuthorization(value) = &tamper {
                        upstream = upstream.header("authorization", value);
                    }
                    let is_range = req.header("range").is_some();
                    if !req.body.is_empty() {
                        upstream = upstream.body(req.body.clone());
                    }
                    let Ok(response) = upstream.send().await else {
                        return;
                    };
                    let status = response.status().as_u16();
                    let headers: Vec<(String, String)> = response
                        .headers()
                        .iter()
                        .filter(|(n, _)| PASSED_HEADERS.contains(&n.as_str()))
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let declared = response.content_length().unwrap_or(0) as usize;
                    let mut body = response.bytes().await.unwrap_or_default().to_vec();
                    if req.method == "HEAD" {
                        write_response(&mut stream, status, &headers, &[], declared).await;
                        return;
                    }
                    let declared = body.len();
                    if let Tamper::StallBlobOnce = tamper {
                        if is_blob && !is_range && blob_gets.fetch_add(1, Ordering::SeqCst) == 0 {
                            stall_after_half(&mut stream, status, &headers, &body).await;
                            return;
                        }
                    }
                    if is_blob && (status == 200 || status == 206) && !body.is_empty() {
                        match tamper {
                            Tamper::CorruptBlob if status == 200 => {
                                let mid = body.len() / 2;
                                body[mid] ^= 0xff;
                            }
                            Tamper::TruncateBlobAlways => body.truncate(body.len() / 2),
                            Tamper::TruncateBlobOnce
                                if !is_range && blob_gets.fetch_add(1, Ordering::SeqCst) == 0 =>
                            {
                                body.truncate(body.len() / 2)
                            }
                            _ => {}
                        }
                    }
                    write_response(&mut stream, status, &headers, &body, declared).await;
                });
            }
        });
        TamperProxy {
            port,
            range_requests,
            authorized_requests,
            requests,
            task,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Writes the head and half the body, then holds the connection open without sending more.
async fn stall_after_half(
    stream: &mut tokio::net::TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) {
    use tokio::io::AsyncWriteExt as _;
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body[..body.len() / 2]).await;
    let _ = stream.flush().await;
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
}
