//! The base images the corpus names, made here (Docker Hub is not reachable): a busybox
//! with every applet, a Debian bookworm minbase, bash on it, and the corpus's own onbuild
//! base, pushed under every alias to the run's registry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::builders::stage_dockerfile;
use super::cases::{self, Case, Stand};
use super::user_tools;
use crate::fidelity::{rbuild, run_ok};

/// A Debian bookworm minbase in `cache/rootfs`, made by debootstrap once and kept (a marker
/// file says it is complete); its /dev emptied, as in an image.
pub(super) fn debian_minbase(cache: &Path) -> Result<PathBuf> {
    let rootfs = cache.join("rootfs");
    let done = cache.join("rootfs.ok");
    if !done.is_file() {
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs)
                .with_context(|| format!("removing the incomplete {}", rootfs.display()))?;
        }
        std::fs::create_dir_all(cache)?;
        let mirror = std::env::var("RBUILD_TEST_DEBIAN_MIRROR")
            .ok()
            .or_else(rbuild_testutil::apt_mirror)
            .ok_or_else(|| anyhow!("no bookworm mirror in /etc/apt/sources.list(.d); set RBUILD_TEST_DEBIAN_MIRROR"))?;
        eprintln!("kaniko-corpus: debootstrap --variant=minbase bookworm from {mirror}");
        run_ok(
            "debootstrap (package debootstrap)",
            Command::new(rbuild_testutil::DEBOOTSTRAP)
                .args(["--variant=minbase", "bookworm"])
                .arg(&rootfs)
                .arg(&mirror),
        )?;
        std::fs::write(&done, "")?;
    }
    let dev = rootfs.join("dev");
    for entry in std::fs::read_dir(&dev).with_context(|| format!("reading {}", dev.display()))? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(rootfs)
}

/// Builds `FROM scratch`, the rootfs, and `extra` lines as `tag` with rbuild.
pub(super) fn build_base(
    bin: &Path,
    store: &Path,
    ctx: &Path,
    tag: &str,
    extra: &str,
) -> Result<()> {
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nCOPY rootfs/ /\n{extra}"),
    )?;
    run_ok(
        &format!("rbuild build (the base {tag})"),
        rbuild(bin, store).args(["build", "-q", "-t", tag]).arg(ctx),
    )?;
    Ok(())
}

/// Where a run keeps what it makes: the rbuild binary and store, a temporary work
/// directory, the debootstrap cache, the registry's address and the corpus.
pub(super) struct Places<'a> {
    pub(super) bin: &'a Path,
    pub(super) store: &'a Path,
    pub(super) work: &'a Path,
    pub(super) cache: &'a Path,
    pub(super) registry: &'a str,
    /// The `HOST:PORT` of the URL stand-ins (`urls.rs`).
    pub(super) url_server: &'a str,
    pub(super) corpus: &'a Path,
}

/// Makes the stand-ins the selected cases need and pushes them under each alias.
pub(super) fn make_bases(places: &Places, cases: &[Case], onbuild: Option<&Case>) -> Result<()> {
    let Places {
        bin,
        store,
        work,
        cache,
        registry,
        url_server,
        corpus,
    } = *places;
    let mut aliases: BTreeMap<String, Stand> = BTreeMap::new();
    for case in cases.iter().filter(|c| c.skip.is_none()) {
        for (alias, stand) in &case.aliases {
            aliases.insert(alias.clone(), *stand);
        }
    }
    let onbuild_needed = aliases.values().any(|s| *s == Stand::OnbuildBase);
    let mut needed: BTreeSet<Stand> = aliases.values().copied().collect();
    let onbuild = match (onbuild_needed, onbuild) {
        (true, Some(onbuild)) => {
            for (alias, stand) in &onbuild.aliases {
                needed.insert(*stand);
                aliases.insert(alias.clone(), *stand);
            }
            Some(onbuild)
        }
        (true, None) => {
            bail!("a case needs onbuild-base, but cases.json has no Dockerfile_onbuild_base")
        }
        (false, _) => None,
    };
    let tag_of = |stand: Stand| match stand {
        Stand::Busybox => "kaniko-corpus-busybox",
        Stand::Debian => "kaniko-corpus-debian",
        Stand::OnbuildBase => "kaniko-corpus-onbuild-base",
        Stand::Bash => "kaniko-corpus-bash",
    };
    if needed.contains(&Stand::Busybox) {
        eprintln!("kaniko-corpus: making the busybox stand-in");
        let ctx = work.join("busybox-base");
        crate::fidelity::busybox_full(&ctx.join("rootfs"))?;
        user_tools::install(&ctx.join("rootfs"))?;
        build_base(bin, store, &ctx, tag_of(Stand::Busybox), "CMD [\"sh\"]\n")?;
        eprintln!("kaniko-corpus: busybox stand-in made");
    }
    if needed.contains(&Stand::Debian) || needed.contains(&Stand::Bash) {
        eprintln!("kaniko-corpus: making the Debian stand-in");
        debian_minbase(cache)?;
        build_base(
            bin,
            store,
            cache,
            tag_of(Stand::Debian),
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"bash\"]\n",
        )?;
    }
    if needed.contains(&Stand::Bash) {
        // The official bash image has its bash in /usr/local/bin, where the corpus's
        // SHELL and shebang name it.
        eprintln!("kaniko-corpus: making the bash stand-in");
        let ctx = work.join("bash-base");
        std::fs::create_dir_all(&ctx)?;
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {}\nRUN ln -s /bin/bash /usr/local/bin/bash\n",
                tag_of(Stand::Debian)
            ),
        )?;
        run_ok(
            "rbuild build (the bash stand-in)",
            rbuild(bin, store)
                .args(["build", "-q", "-t", tag_of(Stand::Bash)])
                .arg(&ctx),
        )?;
    }
    let push = |stand: Stand, alias: &str| -> Result<()> {
        let dest = cases::rewrite_registry(alias, registry);
        run_ok(
            &format!("rbuild push {dest}"),
            rbuild(bin, store).args(["push", tag_of(stand), &dest]),
        )?;
        Ok(())
    };
    eprintln!("kaniko-corpus: pushing the stand-ins");
    for (alias, stand) in aliases.iter().filter(|(_, s)| **s != Stand::OnbuildBase) {
        push(*stand, alias)?;
    }
    if let Some(onbuild) = onbuild {
        eprintln!(
            "kaniko-corpus: building onbuild-base from {}",
            onbuild.dockerfile.display()
        );
        let dockerfile = stage_dockerfile(corpus, onbuild, (registry, url_server), work)?;
        run_ok(
            "rbuild build (onbuild-base)",
            rbuild(bin, store)
                .args(["build", "-q", "-t", tag_of(Stand::OnbuildBase), "-f"])
                .arg(&dockerfile)
                .arg(corpus.join(&onbuild.context)),
        )?;
        for (alias, _) in aliases.iter().filter(|(_, s)| **s == Stand::OnbuildBase) {
            push(Stand::OnbuildBase, alias)?;
        }
    }
    Ok(())
}
