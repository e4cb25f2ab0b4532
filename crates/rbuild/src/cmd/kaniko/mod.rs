//! `rbuild kaniko …` and `/kaniko/executor …`: Kaniko's executor command line with Kaniko's
//! meaning, translated into an `rbuild build` command line. The translation is pure (it only
//! asks whether files exist), so every flag's meaning is unit-tested; what happens after the
//! build (Kaniko's digest files and OCI layout) is done here too, from rbuild's digest file.

mod flags;
mod translate;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Parser as _;
use rbuild_image::Reference;

use flags::{parse_flags, Flag};
use translate::repository_of;
pub use translate::{translate, Translation};

/// Runs a Kaniko command line: translate, build, then write Kaniko's extra outputs.
pub fn run(globals: &crate::cmd::Globals, args: &[String]) -> Result<u8> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "rbuild's Kaniko-compatible executor: Kaniko's flags with Kaniko's meaning \
             (see docs/kaniko.md)"
        );
        return Ok(0);
    }
    let mut t = translate(args, &|p: &Path| p.is_file())?;
    for line in &t.ignored {
        eprintln!("note: {line}");
    }
    let scratch = tempfile::Builder::new()
        .prefix("rbuild-kaniko-")
        .tempdir()
        .context("creating a scratch directory")?;
    let needs_digest =
        t.image_name_with_digest_file.is_some() || t.image_name_tag_with_digest_file.is_some();
    if t.digest_file.is_none() && needs_digest {
        let private = scratch.path().join("digest");
        t.build_args
            .extend(["--digest-file".to_string(), private.display().to_string()]);
        t.digest_file = Some(private);
    }
    if let Some((_, archive)) = &mut t.oci_layout {
        *archive = scratch.path().join("image.oci.tar");
        t.build_args.extend([
            "-o".to_string(),
            format!("type=oci,dest={}", archive.display()),
        ]);
    }
    let flags = parse_flags(args)?;
    let pulls_insecure = flags
        .iter()
        .any(|f| matches!(f, Flag::Bool(n, true) if n == "insecure-pull"));
    let pulls_unverified = flags
        .iter()
        .any(|f| matches!(f, Flag::Bool(n, true) if n == "skip-tls-verify-pull"));
    if pulls_insecure || pulls_unverified {
        for registry in base_registries(&t)? {
            let flag = if pulls_insecure {
                "--insecure-registry"
            } else {
                "--skip-tls-verify-registry"
            };
            t.build_args.extend([flag.to_string(), registry]);
        }
    }

    let code = crate::cmd::build::run(globals, build_args(&t)?)?;
    if code != 0 {
        return Ok(code);
    }
    if let Some(digest_file) = &t.digest_file {
        let digest = std::fs::read_to_string(digest_file)
            .with_context(|| format!("reading {}", digest_file.display()))?;
        let digest = digest.trim();
        if let Some(path) = &t.image_name_with_digest_file {
            let mut lines = String::new();
            for d in &t.destinations {
                lines.push_str(&format!("{}@{digest}\n", repository_of(d)?));
            }
            write_new(path, &lines)?;
        }
        if let Some(path) = &t.image_name_tag_with_digest_file {
            let mut lines = String::new();
            for d in &t.destinations {
                lines.push_str(&format!("{d}@{digest}\n"));
            }
            write_new(path, &lines)?;
        }
    }
    if let Some((layout, archive)) = &t.oci_layout {
        unpack_oci_layout(archive, layout)?;
    }
    Ok(0)
}

/// The translated command line as `rbuild build` parses it; `build::run` resolves it into a
/// `BuildSpec` with the same mapping as rbuild's own flags.
fn build_args(t: &Translation) -> Result<crate::cmd::build::BuildArgs> {
    #[derive(clap::Parser)]
    #[command(name = "rbuild build")]
    struct Build {
        #[command(flatten)]
        args: crate::cmd::build::BuildArgs,
    }
    let argv = std::iter::once("rbuild build".to_string()).chain(t.build_args.iter().cloned());
    let build = Build::try_parse_from(argv)
        .map_err(|e| anyhow!("the translated command line was refused: {e}"))?;
    Ok(build.args)
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Unpacks the OCI archive rbuild wrote into the directory Kaniko's `--oci-layout-path`
/// names (the builder image has no `tar`, so the archive is read here).
fn unpack_oci_layout(archive: &Path, layout: &Path) -> Result<()> {
    std::fs::create_dir_all(layout).with_context(|| format!("creating {}", layout.display()))?;
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    tar::Archive::new(file)
        .unpack(layout)
        .with_context(|| format!("unpacking the OCI layout into {}", layout.display()))
}

/// The registries of the base images named in FROM lines (for `--insecure-pull` and
/// `--skip-tls-verify-pull`), expanded with the global build args.
fn base_registries(t: &Translation) -> Result<Vec<String>> {
    let file = t
        .build_args
        .iter()
        .position(|a| a == "-f")
        .and_then(|i| t.build_args.get(i + 1))
        .map(PathBuf::from);
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the Dockerfile {}", file.display()))?;
    let parsed = rbuild_dockerfile::parse_dockerfile(&file.display().to_string(), &text)
        .map_err(|e| anyhow!("{e}"))?;
    let mut build_args = std::collections::BTreeMap::new();
    for (i, a) in t.build_args.iter().enumerate() {
        if a == "--build-arg" {
            if let Some((k, v)) = t.build_args.get(i + 1).and_then(|kv| kv.split_once('=')) {
                build_args.insert(k.to_string(), v.to_string());
            }
        }
    }
    let platform = rbuild_dockerfile::Platform::parse("linux/amd64").map_err(|e| anyhow!(e))?;
    let opts = rbuild_dockerfile::BuildOptions {
        target: None,
        build_args,
        target_platform: platform.clone(),
        build_platform: platform,
    };
    let global = parsed.global_args(&opts).map_err(|e| anyhow!("{e}"))?;
    let mut out = Vec::new();
    for stage in 0..parsed.stages.len() {
        if let rbuild_dockerfile::Base::Image(image) = parsed
            .stage_base(stage, &global)
            .map_err(|e| anyhow!("{e}"))?
        {
            if image != "scratch" {
                if let Ok(r) = Reference::parse(&image) {
                    let registry = r.registry().to_string();
                    if !out.contains(&registry) {
                        out.push(registry);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Whether this process was started as Kaniko's executor (`/kaniko/executor`).
pub fn invoked_as_executor(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0).file_name().and_then(|n| n.to_str()) == Some("executor")
}

#[cfg(test)]
mod tests;
