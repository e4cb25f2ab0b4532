//! Typed instruction parsing: every instruction, its flags, and the located errors.

use rbuild_dockerfile::instructions::{Instruction, MountType, Network, Security, ShellOrExec};
use rbuild_dockerfile::parse_dockerfile;

/// The first command of the first stage of `FROM scratch\n<line>`.
fn one(line: &str) -> Instruction {
    let df = parse_dockerfile("Dockerfile", &format!("FROM scratch\n{line}\n"))
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    df.stages[0].commands[0].instruction.clone()
}

fn err(line: &str) -> String {
    parse_dockerfile("Dockerfile", &format!("FROM scratch\n{line}\n"))
        .unwrap_err()
        .to_string()
}

#[test]
fn from_with_platform_and_name() {
    let df = parse_dockerfile(
        "Dockerfile",
        "from --platform=$BUILDPLATFORM golang:1.22 As Build\n",
    )
    .unwrap();
    let base = df.stages[0].base();
    assert_eq!(base.image, "golang:1.22");
    assert_eq!(base.name.as_deref(), Some("build"));
    assert_eq!(base.platform.as_deref(), Some("$BUILDPLATFORM"));
}

#[test]
fn run_forms_and_flags() {
    let Instruction::Run(r) = one(
        "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked --network=none apt-get update",
    ) else {
        panic!()
    };
    assert_eq!(r.cmd, ShellOrExec::Shell("apt-get update".into()));
    assert_eq!(r.network, Network::None);
    assert_eq!(r.security, Security::Sandbox);
    let m = r.mounts[0].parsed.as_ref().unwrap();
    assert_eq!(
        (m.kind, m.target.as_deref()),
        (MountType::Cache, Some("/var/cache/apt"))
    );
    let Instruction::Run(r) = one(r#"RUN ["echo", "a b"]"#) else {
        panic!()
    };
    assert_eq!(r.cmd, ShellOrExec::Exec(vec!["echo".into(), "a b".into()]));
    let Instruction::Run(r) = one("RUN --mount=type=secret,id=$ID cat /run/secrets/x") else {
        panic!()
    };
    assert!(
        r.mounts[0].parsed.is_none(),
        "mount with variables waits for expansion"
    );
    let Instruction::Run(r) =
        one("RUN --mount=type=bind,target=/x --mount=type=ssh --security=insecure true")
    else {
        panic!()
    };
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(r.security, Security::Insecure);
}

#[test]
fn run_heredoc() {
    let df = parse_dockerfile(
        "Dockerfile",
        "FROM scratch\nRUN <<-EOT bash\n\techo $HOME\n\tEOT\nUSER me\n",
    )
    .unwrap();
    let cmd = &df.stages[0].commands[0];
    let Instruction::Run(r) = &cmd.instruction else {
        panic!()
    };
    assert_eq!(r.heredocs[0].name, "EOT");
    assert!(r.heredocs[0].chomp);
    assert_eq!(r.heredocs[0].content, "\techo $HOME\n");
    assert_eq!((cmd.location.start_line, cmd.location.end_line), (2, 4));
    assert_eq!(df.stages[0].commands[1].location.start_line, 5);
}

#[test]
fn copy_and_add_flags() {
    let Instruction::Copy(c) =
        one("COPY --from=build --chown=1:2 --chmod=755 --link --parents --exclude=*.md --exclude=*.txt a b /dst/")
    else {
        panic!()
    };
    assert_eq!(c.sources, vec!["a", "b"]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(
        (c.chown.as_deref(), c.chmod.as_deref()),
        (Some("1:2"), Some("755"))
    );
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, vec!["*.md", "*.txt"]);
    let Instruction::Add(a) =
        one("ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false https://x/y.tgz /z")
    else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!((a.keep_git_dir, a.unpack), (Some(true), Some(false)));
    assert!(!a.link);
    let Instruction::Copy(c) = one(r#"COPY ["a b", "/c d"]"#) else {
        panic!()
    };
    assert_eq!((c.sources[0].as_str(), c.dest.as_str()), ("a b", "/c d"));
}

#[test]
fn copy_heredoc_sources() {
    let df = parse_dockerfile(
        "Dockerfile",
        "FROM scratch\nCOPY <<-A <<'B' /dst/\n\tone $X\nA\ntwo $X\nB\n",
    )
    .unwrap();
    let Instruction::Copy(c) = &df.stages[0].commands[0].instruction else {
        panic!()
    };
    assert!(c.sources.is_empty());
    assert_eq!(c.inline_sources[0].path, "A");
    assert_eq!(
        c.inline_sources[0].data, "one $X\n",
        "<<- removes leading tabs"
    );
    assert!(c.inline_sources[0].expand);
    assert_eq!(c.inline_sources[1].data, "two $X\n");
    assert!(
        !c.inline_sources[1].expand,
        "quoted delimiter: no expansion"
    );
}

#[test]
fn env_label_arg() {
    let Instruction::Env(e) = one(r#"ENV A=1 B="two words" C"#.trim_end_matches(" C")) else {
        panic!()
    };
    assert_eq!(e.pairs.len(), 2);
    assert_eq!(
        (e.pairs[1].key.as_str(), e.pairs[1].value.as_str()),
        ("B", "\"two words\"")
    );
    let Instruction::Env(e) = one("ENV PATH /usr/bin:/bin") else {
        panic!()
    };
    assert!(e.pairs[0].no_delim);
    let Instruction::Label(l) = one(r#"LABEL "org.a"="x y" b=c"#) else {
        panic!()
    };
    assert_eq!(l.pairs[0].key, "\"org.a\"");
    let Instruction::Arg(a) = one("ARG A B=2 C=") else {
        panic!()
    };
    let got: Vec<(String, Option<String>)> = a.args.into_iter().map(|d| (d.key, d.value)).collect();
    assert_eq!(
        got,
        vec![
            ("A".into(), None),
            ("B".into(), Some("2".into())),
            ("C".into(), Some(String::new()))
        ]
    );
}

#[test]
fn simple_instructions() {
    let Instruction::Expose(e) = one("EXPOSE 8080/tcp 443") else {
        panic!()
    };
    assert_eq!(e.ports, vec!["443", "8080/tcp"]);
    let Instruction::Volume(v) = one(r#"VOLUME ["/a", "/b"]"#) else {
        panic!()
    };
    assert_eq!(v.volumes, vec!["/a", "/b"]);
    let Instruction::User(u) = one("USER app:app") else {
        panic!()
    };
    assert_eq!(u.user, "app:app");
    let Instruction::Workdir(w) = one("WORKDIR /src/$APP") else {
        panic!()
    };
    assert_eq!(w.path, "/src/$APP");
    let Instruction::Cmd(c) = one("CMD echo hi") else {
        panic!()
    };
    assert_eq!(c.cmd, ShellOrExec::Shell("echo hi".into()));
    let Instruction::Entrypoint(e) = one(r#"ENTRYPOINT ["/bin/app", "--x"]"#) else {
        panic!()
    };
    assert_eq!(
        e.cmd,
        ShellOrExec::Exec(vec!["/bin/app".into(), "--x".into()])
    );
    let Instruction::Shell(s) = one(r#"SHELL ["/bin/bash", "-c"]"#) else {
        panic!()
    };
    assert_eq!(s.shell, vec!["/bin/bash", "-c"]);
    let Instruction::StopSignal(s) = one("STOPSIGNAL SIGKILL") else {
        panic!()
    };
    assert_eq!(s.signal, "SIGKILL");
    let Instruction::Maintainer(m) = one("MAINTAINER me <me@x>") else {
        panic!()
    };
    assert_eq!(m.maintainer, "me <me@x>");
    let Instruction::OnBuild(o) = one("ONBUILD RUN echo hi") else {
        panic!()
    };
    assert_eq!(o.expression, "RUN echo hi");
}

#[test]
fn onbuild_keeps_heredoc() {
    let df = parse_dockerfile(
        "Dockerfile",
        "FROM scratch\nONBUILD RUN <<EOF\necho hi\nEOF\n",
    )
    .unwrap();
    let Instruction::OnBuild(o) = &df.stages[0].commands[0].instruction else {
        panic!()
    };
    assert_eq!(o.expression, "RUN <<EOF\necho hi\nEOF");
}

#[test]
fn healthcheck() {
    let Instruction::Healthcheck(h) =
        one("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --start-interval=100ms --retries=3 CMD curl -f http://localhost/")
    else {
        panic!()
    };
    assert_eq!(h.test, vec!["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(
        (h.interval, h.timeout, h.start_period, h.start_interval),
        (30_000_000_000, 90_000_000_000, 5_000_000_000, 100_000_000)
    );
    assert_eq!(h.retries, 3);
    let Instruction::Healthcheck(h) = one(r#"HEALTHCHECK CMD ["true"]"#) else {
        panic!()
    };
    assert_eq!(h.test, vec!["CMD", "true"]);
    let Instruction::Healthcheck(h) = one("HEALTHCHECK NONE") else {
        panic!()
    };
    assert_eq!(h.test, vec!["NONE"]);
}

#[test]
fn error_messages() {
    let cases = [
        ("COPY --frm=a x y", "Dockerfile:2:6: unknown flag: --frm\n   2 | COPY --frm=a x y\n     |      ^"),
        ("COPY onlyone", "COPY requires at least two arguments, but only one was provided. Destination could not be determined"),
        ("COPY a <<EOF\nEOF", "COPY cannot accept a heredoc as a destination"),
        ("COPY --link=maybe a b", "expecting boolean value for flag --link, not: maybe"),
        ("COPY --from a b", "missing a value on flag: --from"),
        ("ADD --chown=1 --chown=2 a b", "duplicate flag specified: --chown"),
        ("RUN --network=bridge true", "invalid network mode \"bridge\""),
        ("RUN --security=x true", "security \"x\" is not valid"),
        ("RUN --mount=type=nfs true", "unsupported mount type \"nfs\""),
        ("RUN --mount=from=$X,target=/x true", "'from' doesn't support variable expansion"),
        ("USER", "USER requires exactly one argument"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("SHELL /bin/sh -c", "SHELL requires the arguments to be in JSON form"),
        ("HEALTHCHECK --interval=10 CMD x", "time: missing unit in duration \"10\""),
        ("HEALTHCHECK --interval=1ns CMD x", "Interval \"interval\" cannot be less than 1ms"),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK CONNECT x", "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
        ("ARG =x", "ARG names can not be blank"),
        ("LABEL", "LABEL requires at least one argument"),
        ("FROM a AS 1st", "invalid name for build stage: \"1st\", name can't start with a number or contain symbols"),
        ("FROM a b", "FROM requires either one or three arguments"),
        ("FRM a", "Dockerfile:2:1: unknown instruction: FRM"),
        ("ENV PATH", "Dockerfile:2:1: ENV must have two arguments"),
        ("CMD [\"a\", [\"b\"]]", "when using JSON array syntax, arrays must be comprised of strings only"),
        ("VOLUME [\"\"]", "VOLUME specified can not be an empty string"),
    ];
    for (line, want) in cases {
        let got = err(line);
        assert!(got.contains(want), "{line}:\n got {got}\nwant {want}");
    }
}

#[test]
fn errors_outside_stages_and_directives() {
    let e = parse_dockerfile("Df", "RUN x\n").unwrap_err();
    assert_eq!(e.message, "no build stage in current context");
    let e = parse_dockerfile("Df", "# escape=x\nFROM a\n").unwrap_err();
    assert_eq!(
        (e.line, e.message.as_str()),
        (1, "invalid escape token 'x' does not match ` or \\")
    );
    let e = parse_dockerfile("Df", "# escape=`\n# escape=\\\nFROM a\n").unwrap_err();
    assert_eq!(
        (e.line, e.message.as_str()),
        (2, "only one escape parser directive can be used")
    );
    let e = parse_dockerfile("Df", "FROM a\nRUN <<EOF\nno end\n").unwrap_err();
    assert!(e.message.contains("unterminated heredoc"), "{e}");
    let e = parse_dockerfile("Df", "").unwrap_err();
    assert_eq!(e.message, "file with no instructions");
}
