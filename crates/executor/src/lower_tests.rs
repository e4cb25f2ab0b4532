//! Lowering without root or a sandbox: instruction + stage state → op.

use std::cell::RefCell;

use rbuild_dockerfile::instructions::Instruction;
use rbuild_dockerfile::parse_dockerfile;

use super::*;
use crate::op::{MountContent, SourceContent, StepOp};

/// Sources whose content is the digest of their name; records what was asked.
#[derive(Default)]
struct FakeSources {
    asked: RefCell<Vec<String>>,
}

impl SourceKeys for FakeSources {
    fn context_entries(
        &self,
        src: &str,
        parents: bool,
        _filters: &CopyFilters,
    ) -> Result<Vec<(String, Digest)>, BuildError> {
        self.asked
            .borrow_mut()
            .push(format!("context {src} {parents}"));
        if src == "missing" {
            return Err(BuildError::other("missing: no such file"));
        }
        Ok(vec![(src.to_string(), Digest::of(src.as_bytes()))])
    }
    fn key_of_from(&self, current_stage: usize, from: &str) -> Result<Digest, BuildError> {
        self.asked
            .borrow_mut()
            .push(format!("from {from} in {current_stage}"));
        Ok(Digest::of(format!("stage {from}").as_bytes()))
    }
    fn url_content(&self, url: &str) -> Result<Digest, BuildError> {
        self.asked.borrow_mut().push(format!("url {url}"));
        Ok(Digest::of(b"downloaded"))
    }
    fn git_commit(&self, git: &GitRef, _keep: Option<bool>) -> Result<String, BuildError> {
        self.asked.borrow_mut().push(format!("git {}", git.remote));
        Ok("0123abcd".into())
    }
}

fn instruction(line: &str) -> Instruction {
    let df = parse_dockerfile("Dockerfile", &format!("FROM scratch\n{line}\n")).unwrap();
    df.stages[0].commands[0].instruction.clone()
}

fn run_of(line: &str) -> Run {
    match instruction(line) {
        Instruction::Run(r) => r,
        other => panic!("not a RUN: {other:?}"),
    }
}

fn copy_of(line: &str) -> CopySpec {
    match instruction(line) {
        Instruction::Copy(c) => c.into(),
        Instruction::Add(a) => a.into(),
        other => panic!("not a COPY/ADD: {other:?}"),
    }
}

struct Fixture {
    parent: Digest,
    env: Vec<(String, String)>,
    sources: FakeSources,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            parent: Digest::of(b"base"),
            env: vec![("PATH".into(), "/bin".into()), ("V".into(), "1".into())],
            sources: FakeSources::default(),
        }
    }
    fn view(&self) -> StageView<'_> {
        StageView {
            index: 2,
            fs_key: &self.parent,
            env: &self.env,
            user: "app",
            workdir: "/app".into(),
            shell: vec!["/bin/bash".into(), "-c".into()],
        }
    }
    fn lowering(&self) -> Lowering<'_> {
        Lowering {
            build_network: "Host".into(),
            layer_format: LayerFormat("gzip".into()),
            keys: &self.sources,
        }
    }
}

#[test]
fn run_lowers_command_environment_user_workdir_network_and_every_mount() {
    let fx = Fixture::new();
    let run = run_of(
        "RUN --network=none --mount=type=bind,source=src,target=/src \
         --mount=type=bind,from=builder,target=/b --mount=type=cache,target=/c,id=apt,sharing=locked \
         --mount=type=tmpfs,target=/t --mount=type=secret,id=tok --mount=type=ssh make all",
    );
    let op = fx.lowering().run(&fx.view(), &run).unwrap();
    assert_eq!(op.parent, fx.parent);
    assert_eq!(op.command, ["/bin/bash", "-c", "make all"]);
    assert_eq!(op.env, fx.env);
    assert_eq!((op.user.as_str(), op.workdir.as_str()), ("app", "/app"));
    assert_eq!(
        (op.network.as_str(), op.build_network.as_str()),
        ("none", "Host")
    );
    assert_eq!(op.security, "sandbox");
    assert_eq!(op.layer_format.0, "gzip");
    let kinds: Vec<&str> = op.mounts.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["bind", "bind", "cache", "tmpfs", "secret", "ssh"]);
    assert_eq!(
        op.mounts[0].content,
        MountContent::Context(vec![("src".into(), Digest::of(b"src"))])
    );
    assert_eq!(
        op.mounts[1].content,
        MountContent::From(Digest::of(b"stage builder"))
    );
    for m in &op.mounts[2..] {
        assert_eq!(m.content, MountContent::None, "{m:?}");
    }
    assert_eq!(op.mounts[2].id.as_deref(), Some("apt"));
    assert_eq!(op.mounts[2].sharing.as_deref(), Some("locked"));
    // The stage's own index goes with a `from=`, so that only earlier stages are named.
    assert_eq!(
        *fx.sources.asked.borrow(),
        ["context src false", "from builder in 2"]
    );
}

#[test]
fn exec_form_and_shebang_heredoc() {
    let fx = Fixture::new();
    let op = fx
        .lowering()
        .run(&fx.view(), &run_of(r#"RUN ["echo", "a b"]"#))
        .unwrap();
    assert_eq!(op.command, ["echo", "a b"]);
    assert_eq!(op.script, None);

    let run = run_of("RUN <<EOF\n#!/bin/sh\necho hi\nEOF");
    let op = fx.lowering().run(&fx.view(), &run).unwrap();
    assert_eq!(op.command, ["/bin/bash", "-c", "/dev/pipes/EOF"]);
    assert_eq!(
        op.script,
        Some(("/dev/pipes/EOF".into(), "#!/bin/sh\necho hi\n".into()))
    );
}

#[test]
fn a_mount_that_cannot_be_keyed_is_an_error_naming_it() {
    let fx = Fixture::new();
    let mut run = run_of("RUN --mount=type=bind,source=missing,target=/m true");
    let err = fx.lowering().run(&fx.view(), &run).unwrap_err();
    assert!(
        matches!(&err, LowerError::Mount { spec, reason }
            if spec == "type=bind,source=missing,target=/m"
                && reason.to_string().contains("no such file")),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "--mount=type=bind,source=missing,target=/m: missing: no such file"
    );
    run.mounts[0].parsed = None;
    let err = fx.lowering().run(&fx.view(), &run).unwrap_err();
    assert!(err.to_string().contains("not expanded"), "{err}");
}

#[test]
fn copy_lowers_flags_and_the_content_of_each_source() {
    let fx = Fixture::new();
    let spec = copy_of("COPY --chown=1:2 --chmod=640 --exclude=*.tmp a dir/ /dst/");
    let op = fx.lowering().copy(&fx.view(), &spec).unwrap();
    assert!(!op.is_add);
    assert_eq!(op.sources, ["a", "dir/"]);
    assert_eq!(op.dest, "/dst/");
    assert_eq!(op.workdir, "/app");
    assert_eq!(op.chown.as_deref(), Some("1:2"));
    assert_eq!(op.chmod.as_deref(), Some("640"));
    assert_eq!(op.exclude, ["*.tmp"]);
    assert_eq!(
        op.contents,
        [
            SourceContent::Context(vec![("a".into(), Digest::of(b"a"))]),
            SourceContent::Context(vec![("dir/".into(), Digest::of(b"dir/"))]),
        ]
    );

    let op = fx
        .lowering()
        .copy(&fx.view(), &copy_of("COPY --from=builder /out /out"))
        .unwrap();
    assert_eq!(
        op.contents,
        [SourceContent::From(Digest::of(b"stage builder"))]
    );
}

#[test]
fn add_of_a_url_is_keyed_by_checksum_or_download_and_never_shows_credentials() {
    let fx = Fixture::new();
    let sum = format!("sha256:{}", "a".repeat(64));
    let spec = copy_of(&format!(
        "ADD --checksum={sum} https://user:s3cret@example.com/f.tgz /f"
    ));
    let op = fx.lowering().copy(&fx.view(), &spec).unwrap();
    assert!(op.is_add);
    let SourceContent::Url { url, content } = &op.contents[0] else {
        panic!("{:?}", op.contents);
    };
    assert_eq!(content, &sum);
    assert!(
        !url.contains("s3cret") && url.contains("example.com"),
        "{url}"
    );
    assert!(!format!("{:?}", StepOp::Copy(op.clone()).inputs()).contains("s3cret"));
    assert!(
        fx.sources.asked.borrow().is_empty(),
        "a checksum needs no download"
    );

    let spec = copy_of("ADD https://example.com/f.tgz /f");
    let op = fx.lowering().copy(&fx.view(), &spec).unwrap();
    assert_eq!(
        op.contents,
        [SourceContent::Url {
            url: "https://example.com/f.tgz".into(),
            content: Digest::of(b"downloaded").to_string()
        }]
    );
}

#[test]
fn copy_errors_say_which_kind_they_are() {
    let fx = Fixture::new();
    let err = fx
        .lowering()
        .copy(&fx.view(), &copy_of("COPY missing /m"))
        .unwrap_err();
    assert!(
        matches!(&err, LowerError::Read(e) if e.to_string().contains("no such file")),
        "{err:?}"
    );
    let err = fx
        .lowering()
        .copy(&fx.view(), &copy_of("COPY --chmod=999 a /m"))
        .unwrap_err();
    assert!(
        matches!(&err, LowerError::Invalid(e) if matches!(**e, BuildError::Chmod(_))),
        "{err:?}"
    );
    let err = fx
        .lowering()
        .copy(&fx.view(), &copy_of("COPY https://example.com/x /m"))
        .unwrap_err();
    assert!(
        matches!(&err, LowerError::Invalid(e) if e.to_string().contains("URL")),
        "{err:?}"
    );
}

#[test]
fn workdir_lowers_path_user_and_parent() {
    let fx = Fixture::new();
    let op = fx.lowering().workdir(&fx.view(), "/app/sub");
    assert_eq!(op.path, "/app/sub");
    assert_eq!(op.user, "app");
    assert_eq!(op.parent, fx.parent);
}

#[test]
fn heredoc_forms_as_buildkit_runs_them() {
    let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
    let (argv, script) = run_args(&run_of("RUN <<EOF\necho hi\nEOF"), &sh);
    assert_eq!(argv, vec!["/bin/sh", "-c", "echo hi\n"]);
    assert!(script.is_none());
    let (argv, script) = run_args(&run_of("RUN <<EOF\n#!/bin/sh\necho hi\nEOF"), &sh);
    assert_eq!(argv, vec!["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(script.map(|s| s.1).as_deref(), Some("#!/bin/sh\necho hi\n"));
    let (argv, _) = run_args(&run_of(r#"RUN ["a", "b"]"#), &[]);
    assert_eq!(argv, vec!["a", "b"]);
}

#[test]
fn layer_format_names_what_decides_a_layers_bytes() {
    let gzip = WriteOptions::default();
    assert_eq!(layer_format(&gzip).0, "gzip level=- epoch=- xattrs=true");
    let zstd = WriteOptions {
        compression: Compression::Zstd,
        level: Some(3),
        source_date_epoch: Some(1_700_000_000),
        no_xattrs: true,
        ..Default::default()
    };
    assert_eq!(
        layer_format(&zstd).0,
        "zstd level=3 epoch=1700000000 xattrs=false"
    );
    // Threads do not change the bytes, so not the key.
    let threaded = WriteOptions {
        threads: 4,
        ..Default::default()
    };
    assert_eq!(layer_format(&threaded), layer_format(&gzip));
    assert_eq!(network_name(Network::None), "none");
}

/// A secret's `env=` is keyed like its other fields: another variable name is another
/// step, while the secret's value is no input at all (lowering cannot read secrets), so a
/// rotated token never reruns a step nor shows in its key.
#[test]
fn secret_env_is_keyed_by_its_name_not_its_value() {
    let fx = Fixture::new();
    let key = |line: &str| {
        let op = fx.lowering().run(&fx.view(), &run_of(line)).unwrap();
        assert!(op.mounts.iter().all(|m| m.content == MountContent::None));
        StepOp::Run(op).key()
    };
    let as_token = key("RUN --mount=type=secret,id=tok,env=TOKEN true");
    assert_eq!(
        as_token,
        key("RUN --mount=type=secret,id=tok,env=TOKEN true")
    );
    assert_ne!(
        as_token,
        key("RUN --mount=type=secret,id=tok,env=OTHER true")
    );
    assert_ne!(as_token, key("RUN --mount=type=secret,id=tok true"));
    assert_ne!(
        as_token,
        key("RUN --mount=type=secret,id=tok,env=TOKEN,target=/t true")
    );
    assert!(fx.sources.asked.borrow().is_empty(), "no source was read");
}
