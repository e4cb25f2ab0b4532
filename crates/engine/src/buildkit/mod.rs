//! Builds through the daemon's BuildKit (`/build?version=2`), as `DOCKER_BUILDKIT=1 docker
//! build` does: a session the daemon calls back into (registry credentials, secrets, ssh
//! agents), the context as the request body, progress from the `moby.buildkit.trace` records.

pub mod filesync;
mod grpc;
mod http;
pub mod proto;
pub mod session;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use prost::Message;

use crate::context::PackedContext;
use crate::host::DaemonAddress;
use crate::ignore_rules::IgnoreRules;
use crate::progress::Renderer;
use crate::request::{BuildRequest, ContextSource, DockerfileSource, NetworkMode};
use filesync::SyncedDir;

/// How long the daemon may take to start answering `/build` (it answers once the build
/// starts reporting, which is after the context upload).
const BUILD_HEADER_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);
/// The longest line of the build stream accepted (status records carry step output).
const MAX_STREAM_LINE: usize = 16 << 20;

/// Why the classic builder is used instead of BuildKit, if it is.
pub async fn classic_reason(address: &DaemonAddress) -> Result<Option<String>> {
    if let Ok(value) = std::env::var("DOCKER_BUILDKIT") {
        if matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        ) {
            return Ok(Some(format!(
                "DOCKER_BUILDKIT={value} asks for the classic builder"
            )));
        }
    }
    let request = http::request("GET", "/_ping")?
        .body(http::empty_body())
        .context("cannot make the /_ping request")?;
    let response = http::send(address, request, http::CONNECT_TIMEOUT).await?;
    let builder = response
        .headers()
        .get("Builder-Version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let os = response
        .headers()
        .get("Ostype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    http::read_body(response, 4096).await?;
    if os.as_deref() == Some("windows") {
        return Ok(Some(
            "the daemon runs on Windows, where it has no BuildKit".into(),
        ));
    }
    if builder.as_deref() == Some("1") {
        return Ok(Some(
            "the daemon reports Builder-Version 1 (its BuildKit is switched off)".into(),
        ));
    }
    Ok(None)
}

fn build_query(
    req: &BuildRequest,
    dockerfile: &str,
    session_id: &str,
    synced: bool,
) -> Result<String> {
    let mut query = vec![
        ("version".to_string(), "2".to_string()),
        ("session".to_string(), session_id.to_string()),
        ("dockerfile".to_string(), dockerfile.to_string()),
        ("rm".to_string(), "1".to_string()),
        ("forcerm".to_string(), "1".to_string()),
    ];
    if synced {
        // The context and the Dockerfile come through the session's file sync.
        query.push(("remote".into(), "client-session".into()));
    }
    for tag in &req.tags {
        query.push(("t".into(), tag.clone()));
    }
    if !req.build_args.is_empty() {
        query.push(("buildargs".into(), serde_json::to_string(&req.build_args)?));
    }
    if !req.labels.is_empty() {
        query.push(("labels".into(), serde_json::to_string(&req.labels)?));
    }
    if let Some(target) = &req.target {
        query.push(("target".into(), target.clone()));
    }
    if let Some(platform) = &req.platform {
        query.push(("platform".into(), platform.clone()));
    }
    if req.no_cache {
        query.push(("nocache".into(), "1".into()));
    }
    if req.pull {
        query.push(("pull".into(), "1".into()));
    }
    match req.network {
        NetworkMode::Default => {}
        NetworkMode::Host => query.push(("networkmode".into(), "host".into())),
        NetworkMode::None => query.push(("networkmode".into(), "none".into())),
    }
    Ok(query
        .iter()
        .map(|(k, v)| format!("{k}={}", http::encode(v)))
        .collect::<Vec<_>>()
        .join("&"))
}

/// The packed context as the request body, read in chunks (the classic builder's stream).
fn context_body(packed: &PackedContext) -> Result<http::RequestBody> {
    let stream = crate::daemon_build::context_stream(packed)?;
    Ok(StreamBody::new(stream.map_ok(Frame::data)).boxed())
}

/// The directories a directory context syncs (`context`, `dockerfile`) and the Dockerfile's
/// name in the second, as the Docker CLI registers them.
fn synced_dirs(
    context: &Path,
    dockerfile: &DockerfileSource,
) -> Result<(HashMap<String, Arc<SyncedDir>>, String)> {
    let meta = std::fs::metadata(context)
        .with_context(|| format!("the build context {} does not exist", context.display()))?;
    if !meta.is_dir() {
        bail!("the build context {} is not a directory", context.display());
    }
    let (dockerfile_dir, dockerfile_path) = match dockerfile {
        DockerfileSource::Default => (
            SyncedDir::Disk {
                root: context.to_path_buf(),
                rules: None,
            },
            Some(context.join("Dockerfile")),
        ),
        DockerfileSource::Inline(text) => (
            SyncedDir::Memory {
                name: "Dockerfile".into(),
                data: text.clone().into_bytes(),
            },
            None,
        ),
        DockerfileSource::Path(path) => {
            // Relative to the current directory first, then to the context (as `pack`).
            let path = if path.exists() {
                path.clone()
            } else {
                context.join(path)
            };
            let path = std::path::absolute(&path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (
                SyncedDir::Disk {
                    root: parent,
                    rules: None,
                },
                Some(path),
            )
        }
    };
    let name = match &dockerfile_path {
        Some(path) => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} names no Dockerfile", path.display()))?,
        None => "Dockerfile".to_string(),
    };
    if let Some(path) = &dockerfile_path {
        if !path.is_file() {
            bail!("the Dockerfile {} does not exist", path.display());
        }
    }
    let rules = IgnoreRules::load(context, dockerfile_path.as_deref())?;
    let mut dirs = HashMap::new();
    dirs.insert(
        "context".to_string(),
        Arc::new(SyncedDir::Disk {
            root: context.to_path_buf(),
            rules: Some(rules),
        }),
    );
    dirs.insert("dockerfile".to_string(), Arc::new(dockerfile_dir));
    Ok((dirs, name))
}

/// The session's shared key for a context directory: a hash of its absolute path.
fn shared_key(context: &Path) -> Result<String> {
    use sha2::Digest;
    let dir = std::path::absolute(context)
        .with_context(|| format!("cannot resolve {}", context.display()))?;
    let digest = sha2::Sha256::digest(format!("rbuild:{}", dir.display()).as_bytes());
    Ok(hex::encode(digest))
}

/// Runs the build on the daemon's BuildKit; returns the image ID. `packed` is the context
/// archive of a tar context; a directory context is synced through the session.
pub async fn build<W: Write>(
    address: &DaemonAddress,
    req: &BuildRequest,
    packed: Option<&PackedContext>,
    progress: &mut Renderer<W>,
) -> Result<String> {
    let mut providers = session::Providers::default();
    for (id, source) in &req.secrets {
        providers.secrets.insert(id.clone(), source.clone());
    }
    for (id, socket) in &req.ssh {
        providers.ssh.insert(id.clone(), socket.clone());
    }
    let (dockerfile, body) = match (packed, &req.context) {
        (Some(packed), _) => (packed.dockerfile.clone(), Some(context_body(packed)?)),
        (None, ContextSource::Dir(dir)) => {
            let (dirs, name) = synced_dirs(dir, &req.dockerfile)?;
            providers.dirs = dirs;
            providers.shared_key = shared_key(dir)?;
            (name, None)
        }
        (None, _) => bail!("a tar context must be packed before the build"),
    };
    let session = session::start(address, providers).await?;
    let query = build_query(req, &dockerfile, &session.id, body.is_none())?;
    let request = http::request("POST", &format!("/build?{query}"))?
        .header(hyper::header::CONTENT_TYPE, "application/x-tar")
        .body(body.unwrap_or_else(http::empty_body))
        .context("cannot make the /build request")?;
    let response = http::send(address, request, BUILD_HEADER_TIMEOUT).await?;
    let status = response.status();
    if !status.is_success() {
        let body = http::read_body(response, 64 * 1024)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        bail!(
            "the daemon refused the build (HTTP {}): {message}",
            status.as_u16()
        );
    }
    let mut body = response.into_body();
    let mut line = Vec::new();
    let mut image_id = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the daemon's build stream broke off")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for &byte in data.iter() {
            if byte != b'\n' {
                if line.len() >= MAX_STREAM_LINE {
                    bail!(
                        "the daemon sent a build stream line longer than {MAX_STREAM_LINE} bytes"
                    );
                }
                line.push(byte);
                continue;
            }
            if let Some(id) = handle_line(&line, progress)? {
                image_id = Some(id);
            }
            line.clear();
        }
    }
    if !line.is_empty() {
        if let Some(id) = handle_line(&line, progress)? {
            image_id = Some(id);
        }
    }
    drop(session);
    image_id.ok_or_else(|| anyhow!("the daemon finished the build without reporting an image ID"))
}

/// One JSON message of the build stream; returns the image ID when it is the result.
fn handle_line<W: Write>(line: &[u8], progress: &mut Renderer<W>) -> Result<Option<String>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let message: serde_json::Value = serde_json::from_slice(line)
        .context("the daemon sent a build stream message that is not JSON")?;
    if let Some(error) = message
        .get("errorDetail")
        .and_then(|d| d.get("message"))
        .and_then(|m| m.as_str())
        .or_else(|| message.get("error").and_then(|e| e.as_str()))
    {
        return Err(progress.buildkit_failure(error).into());
    }
    match message.get("id").and_then(|id| id.as_str()) {
        Some("moby.buildkit.trace") => {
            let encoded = message
                .get("aux")
                .and_then(|a| a.as_str())
                .ok_or_else(|| anyhow!("a moby.buildkit.trace record without data"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .context("a moby.buildkit.trace record is not base64")?;
            let status = proto::StatusResponse::decode(bytes.as_slice())
                .context("a moby.buildkit.trace record is not a BuildKit StatusResponse")?;
            progress.handle_trace(&status);
            Ok(None)
        }
        Some("moby.image.id") => Ok(message
            .get("aux")
            .and_then(|a| a.get("ID"))
            .and_then(|id| id.as_str())
            .map(str::to_string)),
        _ => {
            if let Some(text) = message.get("stream").and_then(|s| s.as_str()) {
                for line in text.lines() {
                    progress.log_line(line);
                }
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_carries_the_request() {
        let mut req = BuildRequest::new(crate::request::ContextSource::Stdin);
        req.tags = vec!["a:1".into(), "b:2".into()];
        req.build_args.insert("K".into(), "V W".into());
        req.target = Some("stage".into());
        req.network = NetworkMode::None;
        let q = build_query(&req, "sub/Dockerfile", "sess", false).unwrap();
        assert!(
            q.starts_with("version=2&session=sess&dockerfile=sub%2FDockerfile"),
            "{q}"
        );
        assert!(q.contains("&t=a%3A1&t=b%3A2"), "{q}");
        assert!(q.contains("buildargs=%7B%22K%22%3A%22V%20W%22%7D"), "{q}");
        assert!(
            q.contains("target=stage") && q.contains("networkmode=none"),
            "{q}"
        );
        assert!(!q.contains("nocache") && !q.contains("pull"), "{q}");
        assert!(!q.contains("remote="), "{q}");
        let synced = build_query(&req, "Dockerfile", "sess", true).unwrap();
        assert!(synced.contains("&remote=client-session"), "{synced}");
    }

    #[test]
    fn trace_records_become_step_lines_and_the_result_an_id() {
        let status = proto::StatusResponse {
            vertexes: vec![proto::Vertex {
                digest: "sha256:v1".into(),
                name: "[2/3] RUN echo hi".into(),
                started: Some(proto::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            logs: vec![proto::VertexLog {
                vertex: "sha256:v1".into(),
                stream: 1,
                msg: b"hi\n".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let aux = base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec());
        let mut out = Vec::new();
        let mut renderer = Renderer::new(&mut out, crate::ProgressMode::Plain);
        let trace = serde_json::json!({"id": "moby.buildkit.trace", "aux": aux}).to_string();
        assert_eq!(handle_line(trace.as_bytes(), &mut renderer).unwrap(), None);
        let result = br#"{"id":"moby.image.id","aux":{"ID":"sha256:abc"}}"#;
        assert_eq!(
            handle_line(result, &mut renderer).unwrap().as_deref(),
            Some("sha256:abc")
        );
        let err = handle_line(
            br#"{"id":"moby.buildkit.trace","aux":"%%%"}"#,
            &mut renderer,
        );
        assert!(err.unwrap_err().to_string().contains("base64"));
        drop(renderer);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "[2/3] RUN echo hi\n    hi\n");

        // JSON: one object per event; a cached vertex says so; a vertex is shown once.
        let mut cached = status.clone();
        cached.vertexes[0].cached = true;
        cached.logs.clear();
        let mut out = Vec::new();
        let mut renderer = Renderer::new(&mut out, crate::ProgressMode::Json);
        renderer.handle_trace(&cached);
        renderer.handle_trace(&cached);
        drop(renderer);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["type"], "step");
        assert_eq!(lines[0]["index"], 2);
        assert_eq!(lines[0]["instruction"], "RUN echo hi");
        assert_eq!(lines[0]["cached"], true);
    }
}
