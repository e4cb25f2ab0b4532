//! A hostile registry (a small server in the test) cannot make the client wait forever or
//! buffer without bound: every request has a deadline, retries give up, and bodies read into
//! memory are capped whatever the transfer encoding. Timeouts are set to about a second so
//! that each test ends in a few seconds; the memory tests run under an address-space limit.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbuild_image::{Digest, Reference};
use rbuild_registry::{
    Client, ClientOptions, DockerConfig, RetryPolicy, MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES,
};

/// What the server does with a request (by path).
#[derive(Clone)]
enum Answer {
    /// A complete response.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers at once, then one body byte every `every` (the slow-loris).
    Drip {
        headers: Vec<(String, String)>,
        every: Duration,
    },
    /// A chunked body that never ends, sent as fast as the client reads.
    Endless { headers: Vec<(String, String)> },
    /// Accepts the connection, reads the request and never answers.
    Silent,
}

type Route = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// Serves until the test process ends; each connection in its own thread.
fn serve(route: impl Fn(&str) -> Answer + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let route: Route = Arc::new(route);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let route = route.clone();
            std::thread::spawn(move || handle(stream, &*route));
        }
    });
    host
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    Some(head.split(' ').nth(1)?.to_string())
}

fn handle(mut stream: TcpStream, route: &(dyn Fn(&str) -> Answer + Send + Sync)) {
    while let Some(path) = read_head(&mut stream) {
        let head = |status: u16, headers: &[(String, String)], extra: &str| {
            let mut text = format!("HTTP/1.1 {status} X\r\n{extra}");
            for (n, v) in headers {
                text.push_str(&format!("{n}: {v}\r\n"));
            }
            text + "\r\n"
        };
        match route(&path) {
            Answer::Full {
                status,
                headers,
                body,
            } => {
                let text = head(
                    status,
                    &headers,
                    &format!("Content-Length: {}\r\n", body.len()),
                );
                if stream.write_all(text.as_bytes()).is_err() || stream.write_all(&body).is_err() {
                    return;
                }
            }
            Answer::Drip { headers, every } => {
                let text = head(200, &headers, "Content-Length: 1000\r\n");
                if stream.write_all(text.as_bytes()).is_err() {
                    return;
                }
                while stream.write_all(b"{").is_ok() {
                    std::thread::sleep(every);
                }
                return;
            }
            Answer::Endless { headers } => {
                let text = head(200, &headers, "Transfer-Encoding: chunked\r\n");
                if stream.write_all(text.as_bytes()).is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                while stream.write_all(chunk.as_bytes()).is_ok() {}
                return;
            }
            Answer::Silent => {
                std::thread::sleep(Duration::from_secs(3600));
                return;
            }
        }
    }
}

fn json_headers(media_type: &str) -> Vec<(String, String)> {
    vec![("Content-Type".into(), media_type.into())]
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn client(request_timeout: Duration, blob_timeout: Duration, config: &std::path::Path) -> Client {
    Client::new(ClientOptions {
        docker_config: DockerConfig::in_dir(config),
        cert_dirs: Vec::new(),
        retry: RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(100),
        },
        // The idle-read timeout alone never fires against a byte every 200 ms.
        read_timeout: Duration::from_secs(120),
        connect_timeout: Duration::from_secs(5),
        request_timeout,
        blob_timeout,
        ..ClientOptions::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn reference(host: &str) -> Reference {
    Reference::parse(&format!("{host}/evil/image:latest")).unwrap()
}

#[test]
fn a_dripping_manifest_ends_at_the_request_timeout() {
    let host = serve(|path| {
        if path == "/v2/" {
            return Answer::Full {
                status: 200,
                headers: vec![],
                body: vec![],
            };
        }
        Answer::Drip {
            headers: json_headers(OCI_MANIFEST),
            every: Duration::from_millis(200),
        }
    });
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(1),
        Duration::from_secs(1),
        config.path(),
    );
    let started = Instant::now();
    let err = runtime()
        .block_on(client.get_manifest(&reference(&host)))
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        err.to_string().contains(
            "timed out: the registry did not finish answering within the request timeout of 1s"
        ),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_silent_registry_ends_at_the_request_timeout_despite_retries() {
    let host = serve(|_| Answer::Silent);
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(1),
        Duration::from_secs(1),
        config.path(),
    );
    let started = Instant::now();
    let err = runtime()
        .block_on(client.get_manifest(&reference(&host)))
        .unwrap_err();
    assert!(err.to_string().contains("request timeout of 1s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_dripping_blob_ends_at_the_blob_timeout_resumes_included() {
    let host = serve(|_| Answer::Drip {
        headers: vec![],
        every: Duration::from_millis(200),
    });
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(30),
        Duration::from_secs(1),
        config.path(),
    );
    let digest = Digest::of(b"never sent");
    let mut sink = Vec::new();
    let started = Instant::now();
    let err = runtime()
        .block_on(client.pull_blob(&host, "evil/image", &digest, 1000, &mut sink))
        .unwrap_err();
    assert!(err.to_string().contains("blob timeout of 1s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_dripping_token_endpoint_ends_at_the_request_timeout() {
    let host = serve(|_| Answer::Drip {
        headers: json_headers("application/json"),
        every: Duration::from_millis(200),
    });
    // The registry sends clients to that token server.
    let realm_host = host.clone();
    let host2 = serve(move |path| {
        if path.starts_with("/token") {
            return Answer::Drip {
                headers: json_headers("application/json"),
                every: Duration::from_millis(200),
            };
        }
        Answer::Full {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"http://{realm_host}/token\",service=\"evil\""),
            )],
            body: vec![],
        }
    });
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(1),
        Duration::from_secs(1),
        config.path(),
    );
    let started = Instant::now();
    let err = runtime()
        .block_on(client.get_manifest(&reference(&host2)))
        .unwrap_err();
    assert!(
        err.to_string().contains("token server")
            && err.to_string().contains("request timeout of 1s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_endless_chunked_manifest_is_refused_at_the_cap() {
    if !rbuild_testutil::memory_limited(
        "an_endless_chunked_manifest_is_refused_at_the_cap",
        1 << 30,
    ) {
        return;
    }
    let host = serve(|_| Answer::Endless {
        headers: json_headers(OCI_MANIFEST),
    });
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(60),
        Duration::from_secs(60),
        config.path(),
    );
    let err = runtime()
        .block_on(client.get_manifest(&reference(&host)))
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the manifest is larger than the limit of {MAX_MANIFEST_BYTES} bytes"
        )),
        "{err}"
    );
}

#[test]
fn an_endless_token_answer_is_refused_at_the_cap() {
    if !rbuild_testutil::memory_limited("an_endless_token_answer_is_refused_at_the_cap", 1 << 30) {
        return;
    }
    let token_host = serve(|_| Answer::Endless {
        headers: json_headers("application/json"),
    });
    let host = serve(move |_| Answer::Full {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!("Bearer realm=\"http://{token_host}/token\",service=\"evil\""),
        )],
        body: vec![],
    });
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(60),
        Duration::from_secs(60),
        config.path(),
    );
    let err = runtime()
        .block_on(client.get_manifest(&reference(&host)))
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the token answer is larger than the limit of {MAX_TOKEN_BYTES} bytes"
        )),
        "{err}"
    );
}

#[test]
fn an_endless_error_body_is_read_only_in_part() {
    if !rbuild_testutil::memory_limited("an_endless_error_body_is_read_only_in_part", 1 << 30) {
        return;
    }
    let host = serve(|_| Answer::Full {
        status: 404,
        headers: vec![],
        body: vec![b'x'; 8 << 20],
    });
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(60),
        Duration::from_secs(60),
        config.path(),
    );
    let err = runtime()
        .block_on(client.get_manifest(&reference(&host)))
        .unwrap_err();
    assert!(err.to_string().contains("answered 404"), "{err:.200}");
    assert!(err.to_string().len() < 1000, "the message is bounded");
}

fn manifest_with(layers: usize, config_size: u64) -> Vec<u8> {
    let digest = Digest::of(b"x").to_string();
    let layer = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest, "size": 1
    });
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config_size},
        "layers": vec![layer; layers],
    }))
    .unwrap()
}

#[test]
fn too_many_layers_or_a_huge_config_are_refused_before_any_blob() {
    if !rbuild_testutil::memory_limited(
        "too_many_layers_or_a_huge_config_are_refused_before_any_blob",
        1 << 30,
    ) {
        return;
    }
    use rbuild_registry::manifest::{MAX_CONFIG_BYTES, MAX_LAYERS};
    let cases = [
        (
            manifest_with(MAX_LAYERS + 1, 100),
            format!("more than the limit of {MAX_LAYERS}"),
        ),
        (
            manifest_with(1, MAX_CONFIG_BYTES + 1),
            format!("more than the limit of {MAX_CONFIG_BYTES}"),
        ),
    ];
    for (body, expected) in cases {
        let host = serve(move |_| Answer::Full {
            status: 200,
            headers: json_headers(OCI_MANIFEST),
            body: body.clone(),
        });
        let config = tempfile::tempdir().unwrap();
        let client = client(
            Duration::from_secs(10),
            Duration::from_secs(10),
            config.path(),
        );
        let err = runtime()
            .block_on(client.get_manifest(&reference(&host)))
            .unwrap_err();
        assert!(err.to_string().contains(&expected), "{err}");
    }
    // At the limits it is accepted.
    let body = manifest_with(MAX_LAYERS, MAX_CONFIG_BYTES);
    let host = serve(move |_| Answer::Full {
        status: 200,
        headers: json_headers(OCI_MANIFEST),
        body: body.clone(),
    });
    let config = tempfile::tempdir().unwrap();
    let client = client(
        Duration::from_secs(10),
        Duration::from_secs(10),
        config.path(),
    );
    runtime()
        .block_on(client.get_manifest(&reference(&host)))
        .unwrap();
}
