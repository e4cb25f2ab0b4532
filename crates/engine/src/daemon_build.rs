//! One build on a connected daemon: through its BuildKit (`crate::buildkit`), or its classic
//! `/build` API when it has none, then tag, push, export and write the result files.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{
    BuildImageOptions, BuilderVersion, PushImageOptions, TagImageOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use crate::auth;
use crate::context::PackedContext;
use crate::host::DaemonAddress;
use crate::progress::Renderer;
use crate::request::{BuildRequest, NetworkMode, Output};

/// What a finished daemon build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// The image ID (`sha256:` + config digest).
    pub image_id: String,
    /// Each pushed reference with the manifest digest the registry stored.
    pub pushed: Vec<(String, String)>,
}

/// Splits `registry:5000/repo/name:tag` into repository and tag (`latest` when absent).
pub fn split_tag(reference: &str) -> Result<(String, String)> {
    if reference.contains('@') {
        bail!("{reference:?} is a digest reference; a build can only be tagged by name:tag");
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            Ok((reference[..at].to_string(), reference[at + 1..].to_string()))
        }
        None => Ok((reference.to_string(), "latest".to_string())),
    }
}

fn build_options(req: &BuildRequest, dockerfile: &str) -> BuildImageOptions {
    let to_map =
        |m: &std::collections::BTreeMap<String, String>| -> Option<HashMap<String, String>> {
            (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        };
    BuildImageOptions {
        dockerfile: dockerfile.to_string(),
        // The API takes several `t`, bollard only one: the others are tagged afterwards.
        t: req.tags.first().cloned(),
        nocache: req.no_cache,
        pull: req.pull.then(|| "1".to_string()),
        rm: true,
        // Also remove the containers of failed steps, so a failed build leaves nothing behind.
        forcerm: true,
        buildargs: to_map(&req.build_args),
        labels: to_map(&req.labels),
        networkmode: match req.network {
            NetworkMode::Default => None,
            NetworkMode::Host => Some("host".into()),
            NetworkMode::None => Some("none".into()),
        },
        platform: req.platform.clone().unwrap_or_default(),
        target: req.target.clone().unwrap_or_default(),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    }
}

/// Streams the packed context file as the request body (of either builder).
pub(crate) fn context_stream(
    packed: &PackedContext,
) -> Result<impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
    let file = packed
        .file
        .reopen()
        .context("cannot reopen the packed context")?;
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    });
    Ok(stream)
}

/// Runs the build described by `req` on the daemon at `address` (`docker` is the same
/// daemon), reporting through `progress`.
pub async fn build<W: Write>(
    docker: &Docker,
    address: &DaemonAddress,
    req: &BuildRequest,
    packed: Option<&PackedContext>,
    progress: &mut Renderer<W>,
) -> Result<BuildResult> {
    let image_id = match crate::buildkit::classic_reason(address).await? {
        None => crate::buildkit::build(address, req, packed, progress).await?,
        Some(reason) => {
            if !req.secrets.is_empty() || !req.ssh.is_empty() {
                bail!(
                    "--secret and --ssh need the daemon's BuildKit, and the classic builder \
                     is used here: {reason}"
                );
            }
            progress.note(&format!(
                "note: using the daemon's classic builder: {reason}"
            ));
            let packed_now;
            let packed = match packed {
                Some(packed) => packed,
                None => {
                    packed_now =
                        crate::context::pack(&req.context, &req.dockerfile, &mut std::io::empty())?;
                    &packed_now
                }
            };
            classic_build(docker, req, packed, progress).await?
        }
    };
    finish(docker, req, image_id, progress).await
}

/// The classic builder (`/build?version=1`); returns the image ID.
async fn classic_build<W: Write>(
    docker: &Docker,
    req: &BuildRequest,
    packed: &PackedContext,
    progress: &mut Renderer<W>,
) -> Result<String> {
    let options = build_options(req, &packed.dockerfile);
    let creds = auth::all_credentials();
    let creds = (!creds.is_empty()).then_some(creds);
    let body = bollard::body_try_stream(context_stream(packed)?);
    let mut stream = docker.build_image(options, creds, Some(body));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => progress.handle(&info),
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(progress.failure(&error).into());
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) => bail!("the daemon refused the build (HTTP {status_code}): {message}"),
            Err(err) => return Err(anyhow!(err).context("the daemon build failed")),
        }
    }
    let image_id = match progress.image_id() {
        Some(id) => id.to_string(),
        None => match req.tags.first() {
            Some(tag) => docker
                .inspect_image(tag)
                .await
                .with_context(|| format!("the daemon built {tag} but cannot inspect it"))?
                .id
                .ok_or_else(|| anyhow!("the daemon reports no ID for {tag}"))?,
            None => bail!("the daemon finished the build without reporting an image ID"),
        },
    };
    Ok(image_id)
}

/// Tags, pushes, exports and writes the result files of a built image.
async fn finish<W: Write>(
    docker: &Docker,
    req: &BuildRequest,
    image_id: String,
    progress: &mut Renderer<W>,
) -> Result<BuildResult> {
    progress.note(&format!("built {image_id}"));

    for tag in req.tags.iter().skip(1) {
        let (repo, tag_name) = split_tag(tag)?;
        let options = TagImageOptions {
            repo: Some(repo),
            tag: Some(tag_name),
        };
        docker
            .tag_image(&image_id, Some(options))
            .await
            .with_context(|| format!("cannot tag {image_id} as {tag}"))?;
    }
    for tag in &req.tags {
        progress.note(&format!("tagged {tag}"));
    }

    let mut pushed = Vec::new();
    if req.push || req.outputs.contains(&Output::Registry) {
        if req.tags.is_empty() {
            bail!("pushing needs at least one -t/--tag (or --destination) naming the registry");
        }
        for tag in &req.tags {
            let digest = push(docker, tag, progress).await?;
            progress.note(&format!("pushed {tag}@{digest}"));
            pushed.push((tag.clone(), digest));
        }
    }

    for output in &req.outputs {
        if let Output::DockerArchive(dest) = output {
            export(docker, req, &image_id, dest).await?;
            progress.note(&format!("exported {} to {}", image_id, dest.display()));
        }
    }

    let result = BuildResult { image_id, pushed };
    write_result_files(req, &result)?;
    Ok(result)
}

async fn push<W: Write>(
    docker: &Docker,
    reference: &str,
    progress: &mut Renderer<W>,
) -> Result<String> {
    let (repo, tag) = split_tag(reference)?;
    let options = PushImageOptions {
        tag: Some(tag),
        ..Default::default()
    };
    let creds = auth::credentials_for(reference);
    let mut stream = docker.push_image(&repo, Some(options), creds);
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("pushing {reference} failed"))?;
        if let Some(detail) = info.error_detail {
            bail!(
                "pushing {reference} failed: {}",
                detail.message.unwrap_or_default()
            );
        }
        if let Some(status) = info.status {
            // The daemon's final line: `<tag>: digest: sha256:... size: 528`.
            if let Some(rest) = status.split_once("digest: ").map(|(_, r)| r) {
                digest = rest.split_whitespace().next().map(str::to_string);
            }
            progress.note(&format!("    push: {status}"));
        }
    }
    digest.ok_or_else(|| anyhow!("pushing {reference}: the daemon reported no manifest digest"))
}

/// `docker save` into `dest`, by tag when there are tags so the archive carries `RepoTags`.
async fn export(docker: &Docker, req: &BuildRequest, image_id: &str, dest: &Path) -> Result<()> {
    let names: Vec<&str> = if req.tags.is_empty() {
        vec![image_id]
    } else {
        req.tags.iter().map(String::as_str).collect()
    };
    let mut file = std::fs::File::create(dest)
        .with_context(|| format!("cannot create the output file {}", dest.display()))?;
    let mut stream = docker.export_images(&names);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("exporting {image_id} failed"))?;
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

fn write_result_files(req: &BuildRequest, result: &BuildResult) -> Result<()> {
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    if let Some(path) = &req.iidfile {
        write(path, &result.image_id)?;
    }
    if let Some(path) = &req.digest_file {
        // The manifest digest when pushed (what Kaniko writes), otherwise the image ID.
        let digest = result
            .pushed
            .first()
            .map_or(result.image_id.as_str(), |(_, d)| d.as_str());
        write(path, digest)?;
    }
    if let Some(path) = &req.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.config.digest": result.image_id,
            "image.name": req.tags.join(","),
        });
        if let Some((_, digest)) = result.pushed.first() {
            meta["containerimage.digest"] = serde_json::Value::String(digest.clone());
        }
        write(path, &serde_json::to_string_pretty(&meta)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_at_the_last_colon_after_the_last_slash() {
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:v1").unwrap(),
            ("127.0.0.1:5000/a/b".to_string(), "v1".to_string())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/a").unwrap(),
            ("127.0.0.1:5000/a".to_string(), "latest".to_string())
        );
        assert!(split_tag("a@sha256:00").is_err());
    }

    #[test]
    fn options_carry_the_request() {
        let mut req = BuildRequest::new(crate::request::ContextSource::Stdin);
        req.tags = vec!["a:1".into(), "b:2".into()];
        req.build_args.insert("K".into(), "V".into());
        req.network = NetworkMode::None;
        req.target = Some("stage".into());
        req.pull = true;
        let o = build_options(&req, "Dockerfile.x");
        assert_eq!(o.t.as_deref(), Some("a:1"));
        assert_eq!(o.dockerfile, "Dockerfile.x");
        assert_eq!(o.networkmode.as_deref(), Some("none"));
        assert_eq!(o.target, "stage");
        assert_eq!(o.pull.as_deref(), Some("1"));
        assert_eq!(o.buildargs.unwrap().get("K").map(String::as_str), Some("V"));
        assert!(o.labels.is_none());
    }
}
