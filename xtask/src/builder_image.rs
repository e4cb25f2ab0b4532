//! `cargo xtask builder-image OUT_DIR`: the static rbuild binary and the builder images
//! (`rbuild:latest`, `rbuild:debug`, `rbuild:restricted`, `rbuild:restricted-debian`) built
//! from the repository's `Dockerfile` by that binary.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The busybox the debug image carries: Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";

/// Debian's git (package `git`): the binary, and the helper its fetches over HTTP(S) run.
const GIT: &str = "/usr/lib/git-core/git";
const GIT_REMOTE_HTTP: &str = "/usr/lib/git-core/git-remote-http";

/// Where the restricted images keep git's libraries (and their loader, which git's
/// binaries name as their interpreter): below `/rbuild/bin`, which steps may only read, and
/// outside the top-level directories a stage occupies while a step runs. The Dockerfile's
/// `GIT_EXEC_PATH` and `GIT_TEMPLATE_DIR` name the other two directories.
const GIT_LIB: &str = "/rbuild/bin/git-lib";

/// The CA bundle the images trust (Debian's ca-certificates).
pub(crate) const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub fn main(args: &[String]) -> Result<()> {
    let [out] = args else {
        bail!("usage: cargo xtask builder-image OUT_DIR");
    };
    let repo = repo_root()?;
    let out = std::path::absolute(out).context("resolving OUT_DIR")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let binary = build_static_binary(&repo, &out)?;
    let context = out.join("context");
    lay_out_context(&context, &binary)?;
    for (target, tag, file) in [
        ("rbuild", "rbuild:latest", "rbuild.tar"),
        ("debug", "rbuild:debug", "rbuild-debug.tar"),
        ("restricted", "rbuild:restricted", "rbuild-restricted.tar"),
        (
            "restricted-debian",
            "rbuild:restricted-debian",
            "rbuild-restricted-debian.tar",
        ),
    ] {
        let archive = out.join(file);
        run(Command::new(&binary)
            .arg("--root")
            .arg(out.join("store"))
            .args([
                "build",
                "--progress",
                "plain",
                "--target",
                target,
                "-t",
                tag,
            ])
            .arg("-f")
            .arg(repo.join("Dockerfile"))
            .arg("-o")
            .arg(format!("type=docker,dest={}", archive.display()))
            .arg(&context))?;
        let size = std::fs::metadata(&archive)?.len();
        println!("{tag}: {} ({:.1} MiB)", archive.display(), mib(size));
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// A release rbuild linked statically (glibc with `crt-static`), its debug info split off
/// into `OUT_DIR/rbuild.debug` and linked back by `.gnu_debuglink`.
fn build_static_binary(repo: &Path, out: &Path) -> Result<PathBuf> {
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(repo)
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "rbuild",
                "--bin",
                "rbuild",
            ])
            .args(["--target", TARGET])
            // With --target, these flags reach the target's crates only, not build scripts.
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let built = target_dir.join(TARGET).join("release").join("rbuild");
    if has_interpreter(&built)? {
        bail!(
            "{} is dynamically linked; crt-static was not applied",
            built.display()
        );
    }
    let binary = out.join("rbuild");
    let debug = out.join("rbuild.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&built)
        .arg(&debug))?;
    run(Command::new("objcopy")
        .arg("--strip-all")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&built)
        .arg(&binary))?;
    let size = std::fs::metadata(&binary)?.len();
    println!(
        "static binary: {} ({:.1} MiB; debug info in {})",
        binary.display(),
        mib(size),
        debug.display()
    );
    Ok(binary)
}

/// Whether an ELF64 file asks for a dynamic loader (has a PT_INTERP program header).
pub(crate) fn has_interpreter(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |at: usize, len: usize| -> Result<u64> {
        let bytes = data
            .get(at..at + len)
            .with_context(|| format!("{} is truncated", path.display()))?;
        let mut v = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        Ok(v)
    };
    if data.get(..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) {
        bail!("{} is not a 64-bit ELF file", path.display());
    }
    let phoff = field(0x20, 8)? as usize;
    let phentsize = field(0x36, 2)? as usize;
    let phnum = field(0x38, 2)? as usize;
    const PT_INTERP: u64 = 3;
    for i in 0..phnum {
        if field(phoff + i * phentsize, 4)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies a file by the kernel's copy, not through memory: the bench lays out images from
/// here, and every command it then times would inherit this process's high-water resident
/// size at exec (Linux keeps the larger of the old and new process's in `ru_maxrss`), so
/// reading a 100+ MB binary into memory made every row's peak RSS at least that.
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The build context the repository's Dockerfile expects (see its header).
fn lay_out_context(context: &Path, binary: &Path) -> Result<()> {
    if context.exists() {
        std::fs::remove_dir_all(context)
            .with_context(|| format!("removing the old {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    copy_file(binary, &rootfs.join("usr/local/bin/rbuild"), 0o755)?;
    let ca = std::fs::read(CA_BUNDLE)
        .with_context(|| format!("reading {CA_BUNDLE} (install Debian's ca-certificates)"))?;
    write(
        &rootfs.join("etc/ssl/certs/ca-certificates.crt"),
        &ca,
        0o644,
    )?;
    write(
        &rootfs.join("etc/passwd"),
        b"root:x:0:0:root:/root:/sbin/nologin\nbuild:x:1000:1000:build:/home/build:/sbin/nologin\n",
        0o644,
    )?;
    write(
        &rootfs.join("etc/group"),
        b"root:x:0:\nbuild:x:1000:\n",
        0o644,
    )?;
    dir(&rootfs.join("kaniko"), 0o755)?;
    symlink("/usr/local/bin/rbuild", rootfs.join("kaniko/executor"))?;
    dir(&rootfs.join("tmp"), 0o1777)?;
    dir(&rootfs.join("root"), 0o700)?;
    dir(&rootfs.join("var/lib/rbuild"), 0o700)?;
    dir(&rootfs.join("workspace"), 0o755)?;
    dir(&context.join("home/build"), 0o700)?;

    let debug = context.join("debug");
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (install Debian's busybox-static)"))?;
    if has_interpreter(Path::new(BUSYBOX))? {
        bail!("{BUSYBOX} is dynamically linked; install Debian's busybox-static");
    }
    write(&debug.join("busybox/busybox"), &busybox, 0o755)?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list"))?;
    if !list.status.success() {
        bail!("{BUSYBOX} --list failed");
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", debug.join("busybox").join(applet))?;
    }
    dir(&debug.join("bin"), 0o755)?;
    symlink("/busybox/sh", debug.join("bin/sh"))?;
    lay_out_restricted(
        &context.join("restricted"),
        binary,
        &ca,
        RESTRICTED_TOP_LEVEL,
    )?;
    lay_out_git(&context.join("restricted/rbuild/bin"))?;
    lay_out_restricted(
        &context.join("restricted-debian"),
        binary,
        &ca,
        RESTRICTED_DEBIAN_TOP_LEVEL,
    )?;
    lay_out_git(&context.join("restricted-debian/rbuild/bin"))
}

/// Debian's git in `bin` (the restricted images' `/rbuild/bin`), for git contexts and `ADD`
/// of a git URL: `git` itself (every command rbuild runs is one of its builtins, run again
/// from `git-core/`, the exec path), `git-remote-http(s)` for fetches over HTTP(S), and the
/// libraries both load, with their loader. The binaries are patched (patchelf) to name that
/// loader and library directory: `/lib` and `/usr` are the stage's while a step runs, and
/// the builder image's are empty. Not there: git's shell-script commands (`git submodule`
/// needs `sh`) and the ssh client (`git@` URLs).
fn lay_out_git(bin: &Path) -> Result<()> {
    let lib = bin.join("git-lib");
    let core = bin.join("git-core");
    dir(&lib, 0o755)?;
    dir(&core, 0o755)?;
    dir(&bin.join("git-templates"), 0o755)?;
    let mut libraries = std::collections::BTreeMap::new();
    for (from, to) in [
        (GIT, bin.join("git")),
        (GIT_REMOTE_HTTP, core.join("git-remote-http")),
    ] {
        let from = Path::new(from);
        if !from.exists() {
            bail!("{} is missing: install Debian's git", from.display());
        }
        copy_file(from, &to, 0o755)?;
        run(Command::new("patchelf")
            .arg("--set-interpreter")
            .arg(format!("{GIT_LIB}/ld-linux-x86-64.so.2"))
            // DT_RPATH, not DT_RUNPATH: it applies to the libraries' own dependencies too.
            .args(["--force-rpath", "--set-rpath", GIT_LIB])
            .arg(&to))
        .context("patching git's binaries (install Debian's patchelf)")?;
        let out = Command::new("ldd")
            .arg(from)
            .output()
            .with_context(|| format!("running ldd {}", from.display()))?;
        if !out.status.success() {
            bail!("ldd {} failed", from.display());
        }
        let listing = String::from_utf8_lossy(&out.stdout);
        if listing.contains("not found") {
            bail!("{} lacks a library:\n{listing}", from.display());
        }
        for path in ldd_paths(&listing) {
            let name = path
                .file_name()
                .with_context(|| format!("ldd named {}", path.display()))?
                .to_owned();
            libraries.insert(name, path);
        }
    }
    if !libraries.contains_key(std::ffi::OsStr::new("ld-linux-x86-64.so.2")) {
        bail!("ldd {GIT} named no ld-linux-x86-64.so.2");
    }
    for (name, path) in &libraries {
        // By the name the loader asks for (the soname), the file it links to copied.
        copy_file(path, &lib.join(name), 0o755)?;
    }
    symlink("../git", core.join("git"))?;
    symlink("git-remote-http", core.join("git-remote-https"))?;
    Ok(())
}

/// The libraries `ldd` lists by path (`libz.so.1 => /lib/…/libz.so.1 (0x…)`, and the
/// loader's own line), the kernel's vDSO left out.
fn ldd_paths(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The restricted pod's `securityContext` as `docker run` flags
/// (docs/ci/kubernetes-restricted.md): uid 1000, no capabilities, no-new-privileges.
pub(crate) const RESTRICTED_POD_FLAGS: &[&str] = &[
    "--user",
    "1000:1000",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
];

/// The top-level directories of `rbuild:restricted`: a stage can only have top-level
/// directories the image has (`/` is the runtime's). Real directories, so this image serves
/// bases whose `/bin`, `/lib`, `/sbin` are directories (busybox, Alpine), not usrmerge's
/// symlinks (Debian, Ubuntu).
pub(crate) const RESTRICTED_TOP_LEVEL: &str = include_str!("../restricted-top-level.txt");

/// The top level of `rbuild:restricted-debian`, for usrmerge bases (Debian, Ubuntu): `/bin`,
/// `/lib`, `/lib64` and `/sbin` are the symlinks into `/usr` such a stage has (a line
/// `NAME -> TARGET`), the rest directories. A top-level symlink the same in the stage and
/// the builder is left in place; a stage whose `/bin` is a directory cannot use this image.
pub(crate) const RESTRICTED_DEBIAN_TOP_LEVEL: &str =
    include_str!("../restricted-debian-top-level.txt");

/// `restricted/` (or `restricted-debian/`) of the context: the Dockerfile's target copies it
/// to `/`, owned by 1000:0. `top_level` lists its top-level directories and symlinks.
pub(crate) fn lay_out_restricted(
    restricted: &Path,
    rbuild: &Path,
    ca: &[u8],
    top_level: &str,
) -> Result<()> {
    dir(restricted, 0o775)?;
    dir(&restricted.join("rbuild"), 0o775)?;
    // Where a stage's top-level entries that `/` lacks are laid out (top-level
    // redirection, docs/sandbox.md): the build user's, on the container's own file system.
    dir(&restricted.join("rbuild/top"), 0o775)?;
    copy_file(rbuild, &restricted.join("rbuild/bin/rbuild"), 0o755)?;
    write(&restricted.join("rbuild/in-place-root"), b"", 0o644)?;
    write(
        &restricted.join("rbuild/certs/ca-certificates.crt"),
        ca,
        0o644,
    )?;
    for line in top_level.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(" -> ") {
            Some((name, target)) => symlink(target, restricted.join(name))?,
            None => dir(&restricted.join(line), 0o775)?,
        }
    }
    dir(&restricted.join("tmp"), 0o1777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_are_the_libraries_and_the_loader_not_the_vdso() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                       \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f01)\n\
                       \tlibmissing.so.2 => not found\n\
                       \t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n";
        assert_eq!(
            ldd_paths(listing),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
