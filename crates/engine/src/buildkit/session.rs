//! The client side of a BuildKit session: rbuild opens `POST /session` (upgraded to h2c), and
//! over that connection the *daemon* is the HTTP/2 client calling gRPC services rbuild serves:
//! health checks, registry credentials, secrets and ssh-agent forwarding.
//!
//! Every message the daemon sends is bounded (`grpc::MAX_MESSAGE`); secret values only ever
//! travel in responses, never into logs or errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
#[cfg(test)]
use bytes::BytesMut;
use h2::server::SendResponse;
use h2::RecvStream;
use hyper::http;
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::filesync::{self, Source, SyncedDir};
#[cfg(test)]
use super::grpc::take_message;
use super::grpc::{frame, grpc_response, send_message, trailers, MessageReader};
use super::http as daemon_http;
use super::proto;
use crate::host::DaemonAddress;
use crate::request::SecretSource;

/// The largest secret served (BuildKit's own limit is 500 KiB).
const MAX_SECRET: u64 = 500 * 1024;
/// How long the daemon may take to send a unary call's request message.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const AUTH_CREDENTIALS: &str = "/moby.filesync.v1.Auth/Credentials";
const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
const SSH_CHECK_AGENT: &str = "/moby.sshforward.v1.SSH/CheckAgent";
const SSH_FORWARD_AGENT: &str = "/moby.sshforward.v1.SSH/ForwardAgent";
const DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";
/// How long the daemon may leave a directory sync without a request.
const SYNC_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// File contents go out in chunks of this size (fsutil's own).
const SYNC_CHUNK: usize = 32 * 1024;
/// The gRPC metadata key that names the ssh id a forwarded connection is for.
const SSH_ID_KEY: &str = "buildkit.ssh.id";

/// gRPC status codes used here.
const CODE_NOT_FOUND: u32 = 5;
const CODE_FAILED_PRECONDITION: u32 = 9;
const CODE_UNIMPLEMENTED: u32 = 12;
const CODE_INTERNAL: u32 = 13;

/// What the session serves.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    /// `--secret` ids and where their values come from.
    pub secrets: HashMap<String, SecretSource>,
    /// `--ssh` ids and the agent sockets they forward to.
    pub ssh: HashMap<String, PathBuf>,
    /// Directories the daemon may sync by name (`context`, `dockerfile`).
    pub dirs: HashMap<String, Arc<SyncedDir>>,
    /// The session's shared key: BuildKit keeps one copy of a synced directory per key and
    /// name and sends only the differences the next time, so each context directory needs
    /// its own (the Docker CLI hashes the directory's path too).
    pub shared_key: String,
}

impl Providers {
    fn methods(&self) -> Vec<&'static str> {
        let mut methods = vec![HEALTH_CHECK, AUTH_CREDENTIALS];
        if !self.secrets.is_empty() {
            methods.push(GET_SECRET);
        }
        if !self.ssh.is_empty() {
            methods.push(SSH_CHECK_AGENT);
            methods.push(SSH_FORWARD_AGENT);
        }
        if !self.dirs.is_empty() {
            methods.push(DIFF_COPY);
        }
        methods
    }
}

/// A random identifier as BuildKit makes them (25 base-36 characters).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // No urandom: uniqueness per process and time is all a session id needs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    let mut n = u128::from_le_bytes(bytes);
    let mut out = String::new();
    for _ in 0..25 {
        let digit = (n % 36) as u32;
        n /= 36;
        out.push(char::from_digit(digit, 36).unwrap_or('0'));
    }
    out
}

/// An open session; dropping it ends the connection.
pub struct Session {
    pub id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the session on the daemon and starts serving it.
pub async fn start(address: &DaemonAddress, providers: Providers) -> Result<Session> {
    let id = new_id();
    let mut builder = daemon_http::request("POST", "/session")?
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "h2c")
        .header("X-Docker-Expose-Session-Uuid", &id)
        .header("X-Docker-Expose-Session-Name", "rbuild")
        .header("X-Docker-Expose-Session-Sharedkey", &providers.shared_key);
    for method in providers.methods() {
        builder = builder.header("X-Docker-Expose-Session-Grpc-Method", method);
    }
    let request = builder
        .body(daemon_http::empty_body())
        .context("cannot make the /session request")?;
    let response = daemon_http::send(address, request, daemon_http::CONNECT_TIMEOUT).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = daemon_http::read_body(response, 64 * 1024)
            .await
            .unwrap_or_default();
        bail!(
            "the daemon refused the BuildKit session (HTTP {status}): {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let upgraded = tokio::time::timeout(daemon_http::CONNECT_TIMEOUT, hyper::upgrade::on(response))
        .await
        .map_err(|_| anyhow!("the daemon did not hand over the session connection in time"))?
        .context("the daemon did not hand over the session connection")?;
    let providers = Arc::new(providers);
    let task = tokio::spawn(async move {
        // The session ends when the daemon closes it or the build drops it; errors of single
        // calls are answered to the daemon, which reports them in the build.
        let _ = serve(TokioIo::new(upgraded), providers).await;
    });
    Ok(Session { id, task })
}

async fn serve<T>(io: T, providers: Arc<Providers>) -> Result<()>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = h2::server::Builder::new()
        .max_frame_size(1 << 20)
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(256)
        .handshake::<_, Bytes>(io)
        .await
        .context("HTTP/2 handshake on the session failed")?;
    while let Some(call) = connection.accept().await {
        let (request, respond) = call.context("the session connection failed")?;
        let providers = Arc::clone(&providers);
        tokio::spawn(async move {
            handle(request, respond, &providers).await;
        });
    }
    Ok(())
}

/// A gRPC error to answer with.
struct Status {
    code: u32,
    message: String,
}

impl Status {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }
}

async fn handle(
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    providers: &Providers,
) {
    let path = request.uri().path().to_string();
    let ssh_id = request
        .headers()
        .get(SSH_ID_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("default")
        .to_string();
    let header_values = |name: &str| -> Vec<String> {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let dir_name = header_values("dir-name")
        .into_iter()
        .next()
        .unwrap_or_default();
    let includes = header_values("include-patterns");
    let follow = header_values("followpaths");
    let mut body = MessageReader::new(request.into_body());
    if path == DIFF_COPY {
        let sync = diff_copy(&dir_name, &includes, &follow, body, &mut respond, providers);
        if let Err(status) = sync.await {
            send_status(&mut respond, status);
        }
        return;
    }
    if path == SSH_FORWARD_AGENT {
        if let Err(status) = forward_agent(&ssh_id, body, &mut respond, providers).await {
            send_status(&mut respond, status);
        }
        return;
    }
    // A unary call's message comes whole within the stall limit, or the call is dropped.
    let message = tokio::time::timeout(CALL_TIMEOUT, body.next()).await;
    let result = match message.unwrap_or_else(|_| Err(anyhow!("the call stalled"))) {
        Err(err) => Err(Status::new(CODE_INTERNAL, format!("{err:#}"))),
        Ok(None) => Err(Status::new(CODE_INTERNAL, "the request has no message")),
        Ok(Some(message)) => unary(&path, &message, providers).await,
    };
    match result {
        Ok(reply) => {
            let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
                return;
            };
            let _ = stream.send_data(frame(&reply), false);
            let _ = stream.send_trailers(trailers(0, ""));
        }
        Err(status) => send_status(&mut respond, status),
    }
}

async fn unary(
    path: &str,
    message: &[u8],
    providers: &Providers,
) -> std::result::Result<Vec<u8>, Status> {
    let bad = |e: prost::DecodeError| Status::new(CODE_INTERNAL, format!("bad request: {e}"));
    match path {
        HEALTH_CHECK => {
            proto::HealthCheckRequest::decode(message).map_err(bad)?;
            Ok(proto::HealthCheckResponse { status: 1 }.encode_to_vec())
        }
        AUTH_CREDENTIALS => {
            let req = proto::CredentialsRequest::decode(message).map_err(bad)?;
            // A credential helper is a process: keep it off the session's async threads.
            let (username, secret) =
                tokio::task::spawn_blocking(move || credentials_for_host(&req.host))
                    .await
                    .map_err(|e| Status::new(CODE_INTERNAL, e.to_string()))?;
            Ok(proto::CredentialsResponse { username, secret }.encode_to_vec())
        }
        GET_SECRET => {
            let req = proto::GetSecretRequest::decode(message).map_err(bad)?;
            let data = secret_value(&req.id, providers).await?;
            Ok(proto::GetSecretResponse { data }.encode_to_vec())
        }
        SSH_CHECK_AGENT => {
            let req = proto::CheckAgentRequest::decode(message).map_err(bad)?;
            let id = if req.id.is_empty() {
                "default"
            } else {
                req.id.as_str()
            };
            if !providers.ssh.contains_key(id) {
                return Err(Status::new(
                    CODE_NOT_FOUND,
                    format!("no ssh agent for id {id:?} was given with --ssh"),
                ));
            }
            Ok(proto::CheckAgentResponse {}.encode_to_vec())
        }
        _ => Err(Status::new(
            CODE_UNIMPLEMENTED,
            format!("rbuild does not serve {path}"),
        )),
    }
}

/// The credentials config.json holds for a registry host the daemon asks about
/// (`registry-1.docker.io` is Docker Hub's key); none means anonymous.
fn credentials_for_host(host: &str) -> (String, String) {
    let key = if host == "registry-1.docker.io" || host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    };
    match docker_credential::get_credential(&key) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            (user, password)
        }
        // An identity token goes as the secret with an empty user name, as the Docker CLI does.
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => (String::new(), token),
        Err(_) => (String::new(), String::new()),
    }
}

async fn secret_value(id: &str, providers: &Providers) -> std::result::Result<Vec<u8>, Status> {
    match providers.secrets.get(id) {
        None => Err(Status::new(
            CODE_NOT_FOUND,
            format!("secret {id} not found: no --secret id={id} was given"),
        )),
        Some(SecretSource::Env(var)) => std::env::var_os(var)
            .map(|v| v.into_encoded_bytes())
            .ok_or_else(|| {
                Status::new(
                    CODE_FAILED_PRECONDITION,
                    format!("secret {id}: the environment variable {var} is not set"),
                )
            }),
        Some(SecretSource::File(path)) => {
            let fail = |e: std::io::Error| {
                Status::new(
                    CODE_FAILED_PRECONDITION,
                    format!("secret {id}: cannot read {}: {e}", path.display()),
                )
            };
            let meta = tokio::fs::metadata(path).await.map_err(fail)?;
            if meta.len() > MAX_SECRET {
                return Err(Status::new(
                    CODE_FAILED_PRECONDITION,
                    format!(
                        "secret {id}: {} is larger than {MAX_SECRET} bytes",
                        path.display()
                    ),
                ));
            }
            tokio::fs::read(path).await.map_err(fail)
        }
    }
}

/// Proxies one agent connection: the daemon's messages go to the agent socket, the agent's
/// answers come back as messages, until either side ends.
async fn forward_agent(
    id: &str,
    mut body: MessageReader,
    respond: &mut SendResponse<Bytes>,
    providers: &Providers,
) -> std::result::Result<(), Status> {
    let socket = providers.ssh.get(id).ok_or_else(|| {
        Status::new(
            CODE_NOT_FOUND,
            format!("no ssh agent for id {id:?} was given with --ssh"),
        )
    })?;
    let agent = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        Status::new(
            CODE_FAILED_PRECONDITION,
            format!("cannot connect to the ssh agent {}: {e}", socket.display()),
        )
    })?;
    let (mut agent_read, mut agent_write) = agent.into_split();
    let mut stream = respond
        .send_response(grpc_response(), false)
        .map_err(|e| Status::new(CODE_INTERNAL, e.to_string()))?;
    let to_agent = async {
        while let Ok(Some(message)) = body.next().await {
            let Ok(chunk) = proto::BytesMessage::decode(message.as_slice()) else {
                break;
            };
            if agent_write.write_all(&chunk.data).await.is_err() {
                break;
            }
        }
        let _ = agent_write.shutdown().await;
    };
    let from_agent = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match agent_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = proto::BytesMessage {
                        data: buf[..n].to_vec(),
                    };
                    if stream
                        .send_data(frame(&message.encode_to_vec()), false)
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    // The agent answers each request; the connection ends when the daemon's side does.
    tokio::select! {
        _ = to_agent => {}
        _ = from_agent => {}
    }
    let _ = stream.send_trailers(trailers(0, ""));
    Ok(())
}

/// Serves one directory sync: every entry's stat, then the files the daemon requests.
async fn diff_copy(
    dir_name: &str,
    includes: &[String],
    follow: &[String],
    mut body: MessageReader,
    respond: &mut SendResponse<Bytes>,
    providers: &Providers,
) -> std::result::Result<(), Status> {
    let dir = providers.dirs.get(dir_name).cloned().ok_or_else(|| {
        Status::new(
            CODE_NOT_FOUND,
            format!("no access allowed to dir {dir_name:?}"),
        )
    })?;
    let (includes, follow) = (includes.to_vec(), follow.to_vec());
    let entries = tokio::task::spawn_blocking(move || filesync::entries(&dir, &includes, &follow))
        .await
        .map_err(|e| Status::new(CODE_INTERNAL, e.to_string()))?
        .map_err(|e| Status::new(CODE_INTERNAL, format!("{e:#}")))?;
    let mut stream = respond
        .send_response(grpc_response(), false)
        .map_err(|e| Status::new(CODE_INTERNAL, e.to_string()))?;
    let result = async {
        for entry in &entries {
            let packet = proto::Packet {
                kind: proto::PACKET_STAT,
                stat: Some(entry.stat.clone()),
                ..Default::default()
            };
            send_message(&mut stream, &packet).await?;
        }
        // An empty stat ends the listing.
        send_message(&mut stream, &proto::Packet::default()).await?;
        loop {
            let next = tokio::time::timeout(SYNC_IDLE_TIMEOUT, body.next()).await;
            let message = match next {
                Err(_) => return Err(anyhow!("the daemon stopped asking for files")),
                Ok(message) => message?,
            };
            let Some(message) = message else {
                return Ok(());
            };
            let packet = proto::Packet::decode(message.as_slice())
                .context("the daemon sent a file-sync packet that is not one")?;
            match packet.kind {
                proto::PACKET_REQ => {
                    let source = usize::try_from(packet.id)
                        .ok()
                        .and_then(|i| entries.get(i))
                        .and_then(|e| e.source.as_ref())
                        .ok_or_else(|| {
                            anyhow!("the daemon asked for entry {}, which is no file", packet.id)
                        })?;
                    send_file(&mut stream, packet.id, source).await?;
                }
                proto::PACKET_FIN => {
                    let fin = proto::Packet {
                        kind: proto::PACKET_FIN,
                        ..Default::default()
                    };
                    return send_message(&mut stream, &fin).await;
                }
                proto::PACKET_ERR => {
                    bail!(
                        "the daemon's file sync failed: {}",
                        String::from_utf8_lossy(&packet.data)
                    )
                }
                _ => {}
            }
        }
    }
    .await;
    match result {
        Ok(()) => {
            let _ = stream.send_trailers(trailers(0, ""));
        }
        Err(err) => {
            let _ = stream.send_trailers(trailers(CODE_INTERNAL, &format!("{err:#}")));
        }
    }
    Ok(())
}

/// A file's contents as DATA packets, then an empty one for its end.
async fn send_file(stream: &mut h2::SendStream<Bytes>, id: u32, source: &Source) -> Result<()> {
    let data = |chunk: Vec<u8>| proto::Packet {
        kind: proto::PACKET_DATA,
        id,
        data: chunk,
        ..Default::default()
    };
    match source {
        Source::Bytes(bytes) => {
            for chunk in bytes.chunks(SYNC_CHUNK) {
                send_message(stream, &data(chunk.to_vec())).await?;
            }
        }
        Source::File(path) => {
            let mut file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut buf = vec![0u8; SYNC_CHUNK];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if n == 0 {
                    break;
                }
                send_message(stream, &data(buf[..n].to_vec())).await?;
            }
        }
    }
    send_message(stream, &data(Vec::new())).await
}

/// A trailers-only error answer.
fn send_status(respond: &mut SendResponse<Bytes>, status: Status) {
    let mut response = grpc_response();
    response
        .headers_mut()
        .extend(trailers(status.code, &status.message));
    let _ = respond.send_response(response, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_taken_whole_and_bounded() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(b"abc"));
        buf.extend_from_slice(&frame(b"de")[..4]);
        assert_eq!(take_message(&mut buf).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(
            take_message(&mut buf).unwrap(),
            None,
            "a partial message waits"
        );
        buf.extend_from_slice(&frame(b"de")[4..]);
        assert_eq!(take_message(&mut buf).unwrap(), Some(b"de".to_vec()));
        let mut huge = BytesMut::from(&[0u8, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(take_message(&mut huge)
            .unwrap_err()
            .to_string()
            .contains("limit"));
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert!(take_message(&mut compressed).is_err());
    }

    #[test]
    fn ids_are_25_base36_characters_and_differ() {
        let a = new_id();
        assert_eq!(a.len(), 25);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_ne!(a, new_id());
    }

    #[tokio::test]
    async fn secrets_are_served_from_files_and_the_environment_and_unknown_ids_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "file-value").unwrap();
        let mut providers = Providers::default();
        providers
            .secrets
            .insert("f".into(), SecretSource::File(file));
        providers.secrets.insert(
            "missing".into(),
            SecretSource::Env("RBUILD_TEST_UNSET_VARIABLE".into()),
        );
        assert_eq!(
            secret_value("f", &providers).await.ok().unwrap(),
            b"file-value"
        );
        let err = secret_value("missing", &providers).await.err().unwrap();
        assert_eq!(err.code, CODE_FAILED_PRECONDITION);
        assert!(err.message.contains("RBUILD_TEST_UNSET_VARIABLE"));
        let err = secret_value("other", &providers).await.err().unwrap();
        assert_eq!(err.code, CODE_NOT_FOUND);
        assert!(!err.message.contains("file-value"));
        let reply = unary(
            GET_SECRET,
            &proto::GetSecretRequest { id: "f".into() }.encode_to_vec(),
            &providers,
        )
        .await
        .ok()
        .unwrap();
        assert_eq!(
            proto::GetSecretResponse::decode(reply.as_slice())
                .unwrap()
                .data,
            b"file-value"
        );
        let unknown = unary("/x.Y/Z", &[], &providers).await.err().unwrap();
        assert_eq!(unknown.code, CODE_UNIMPLEMENTED);
        // The daemon cannot use the unary path to reach the file sync or the agent.
        for path in [DIFF_COPY, SSH_FORWARD_AGENT] {
            assert_eq!(
                unary(path, &[], &providers).await.err().unwrap().code,
                CODE_UNIMPLEMENTED
            );
        }
    }
}
