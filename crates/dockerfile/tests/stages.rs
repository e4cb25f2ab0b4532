//! The stage model: global ARGs, build args, predefined platform args, FROM expansion,
//! `--target`, dependencies and the build order; and instruction expansion.

use std::collections::BTreeMap;

use rbuild_dockerfile::instructions::Instruction;
use rbuild_dockerfile::{parse_dockerfile, Base, BuildOptions, DependencyKind, Platform};

fn opts(target: Option<&str>, args: &[(&str, &str)]) -> BuildOptions {
    BuildOptions {
        target: target.map(str::to_string),
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        target_platform: Platform::parse("linux/arm64/v8").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
    }
}

const MULTI: &str = "\
ARG BASE=alpine
ARG TAG=3.20
FROM --platform=$BUILDPLATFORM ${BASE}:${TAG} AS Build
RUN make
FROM build AS test
RUN make test
FROM scratch AS docs
COPY --from=build /doc /doc
FROM ${BASE}:${TAG}
COPY --from=Build /bin/app /app
COPY --from=2 /doc /doc
RUN --mount=type=bind,from=test,target=/t true
";

#[test]
fn global_args_defaults_overrides_and_platform() {
    let df = parse_dockerfile("Dockerfile", MULTI).unwrap();
    assert_eq!(df.meta_args.len(), 2);
    let global = df.global_args(&opts(None, &[("TAG", "edge")])).unwrap();
    let get = |k: &str| {
        global
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("BASE"), Some("alpine"));
    assert_eq!(get("TAG"), Some("edge"));
    assert_eq!(get("TARGETPLATFORM"), Some("linux/arm64/v8"));
    assert_eq!(get("TARGETVARIANT"), Some("v8"));
    assert_eq!(get("BUILDARCH"), Some("amd64"));
    assert_eq!(
        df.stage_base(3, &global).unwrap(),
        Base::Image("alpine:edge".into())
    );
    assert_eq!(df.stage_base(1, &global).unwrap(), Base::Stage(0));
    let from = df.stages[0]
        .from
        .expand("Dockerfile", &df.lexer(), &global)
        .unwrap();
    let Instruction::From(f) = from.instruction else {
        panic!()
    };
    assert_eq!(f.platform.as_deref(), Some("linux/amd64"));
}

#[test]
fn meta_arg_default_sees_earlier_meta_args() {
    let df = parse_dockerfile("Df", "ARG V=1\nARG IMG=app:$V\nFROM $IMG\n").unwrap();
    let global = df.global_args(&opts(None, &[])).unwrap();
    assert_eq!(
        df.stage_base(0, &global).unwrap(),
        Base::Image("app:1".into())
    );
}

#[test]
fn target_and_stage_names_are_case_insensitive() {
    let df = parse_dockerfile("Dockerfile", MULTI).unwrap();
    assert_eq!(df.target_stage(None).unwrap(), 3);
    assert_eq!(df.target_stage(Some("TEST")).unwrap(), 1);
    let e = df.target_stage(Some("nope")).unwrap_err();
    assert!(e.message.contains("\"nope\" could not be found"), "{e}");
}

/// BuildKit lowercases stage names; `--target` and `COPY --from` look them up lowercased,
/// FROM looks up what it names as written (Kaniko's `Dockerfile_test_issue_519`: `FROM
/// BUG_stage` after `AS BUG_stage` is the image `BUG_stage`, which BuildKit refuses).
#[test]
fn from_matches_stage_names_as_written_copy_from_and_target_do_not() {
    let df = parse_dockerfile(
        "Dockerfile",
        "FROM alpine AS BUG_stage\nFROM BUG_stage AS upper\nFROM bug_stage AS lower\nCOPY --from=BUG_STAGE /x /x\n",
    )
    .unwrap();
    let o = opts(None, &[]);
    let global = df.global_args(&o).unwrap();
    assert_eq!(
        df.stage_base(1, &global).unwrap(),
        Base::Image("BUG_stage".into())
    );
    assert_eq!(df.stage_base(2, &global).unwrap(), Base::Stage(0));
    assert_eq!(df.target_stage(Some("Bug_Stage")).unwrap(), 0);
    let deps = df.dependencies(2, &global, &o).unwrap();
    let got: Vec<(usize, DependencyKind)> = deps.iter().map(|d| (d.stage, d.kind)).collect();
    assert!(
        got.contains(&(0, DependencyKind::CopyFrom)),
        "COPY --from=BUG_STAGE names stage 0: {got:?}"
    );
}

#[test]
fn dependencies_and_build_plan() {
    let df = parse_dockerfile("Dockerfile", MULTI).unwrap();
    let o = opts(None, &[]);
    let global = df.global_args(&o).unwrap();
    let deps = df.dependencies(3, &global, &o).unwrap();
    let got: Vec<(usize, DependencyKind, usize)> =
        deps.iter().map(|d| (d.stage, d.kind, d.line)).collect();
    assert_eq!(
        got,
        vec![
            (0, DependencyKind::CopyFrom, 10),
            (2, DependencyKind::CopyFrom, 11),
            (1, DependencyKind::MountFrom, 12)
        ]
    );
    let plan = df.build_plan(&o).unwrap();
    assert_eq!(plan.target, 3);
    assert_eq!(plan.order, vec![0, 2, 1, 3]);
    assert_eq!(plan.levels, vec![vec![0], vec![1, 2], vec![3]]);
    let plan = df.build_plan(&opts(Some("docs"), &[])).unwrap();
    assert_eq!(plan.order, vec![0, 2]);
}

/// BuildKit v0.32 never expands `COPY --from` and refuses a value with a variable (a stage
/// ARG or a global one), in any stage, needed or not (`testDockerfileCopyFromArgs`).
#[test]
fn copy_from_with_a_variable_is_refused() {
    let message = "variable expansion is not supported for --from, define a new stage with \
                   FROM using ARG from global scope as a workaround";
    for text in [
        "FROM alpine AS a\nFROM alpine\nARG SRC=a\nCOPY --from=$SRC /x /x\n",
        "ARG SRC=a\nFROM alpine AS a\nFROM alpine\nCOPY --from=${SRC} /x /x\n",
        "FROM alpine AS a\nCOPY --from=${SRC:-a} /x /x\nFROM alpine\nRUN true\n",
    ] {
        let e = parse_dockerfile("Df", text).unwrap_err();
        assert!(e.message.contains(message), "{text}: {e}");
        assert!(e.line == 2 || e.line == 4, "{text}: {e}");
    }
    // Text without a variable is the stage's name as written.
    let df = parse_dockerfile(
        "Df",
        "FROM alpine AS a-1\nFROM alpine\nCOPY --from=a-1 /x /x\n",
    )
    .unwrap();
    let o = opts(None, &[]);
    let global = df.global_args(&o).unwrap();
    assert_eq!(df.dependencies(1, &global, &o).unwrap()[0].stage, 0);
}

#[test]
fn copy_from_stages_and_images() {
    let df = parse_dockerfile(
        "Df",
        "FROM alpine AS a\nFROM alpine\nARG SRC=a\nCOPY --from=a /x /x\nCOPY --from=busybox:1 /bin/sh /sh\n",
    )
    .unwrap();
    let o = opts(None, &[]);
    let global = df.global_args(&o).unwrap();
    let deps = df.dependencies(1, &global, &o).unwrap();
    assert_eq!(deps.len(), 1, "busybox:1 is an image, not a stage");
    assert_eq!((deps[0].stage, deps[0].line), (0, 4));
}

#[test]
fn bad_stage_references_are_errors() {
    let df = parse_dockerfile("Df", "FROM alpine AS a\nCOPY --from=a /x /y\n").unwrap();
    let o = opts(None, &[]);
    let e = df.build_plan(&o).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("cannot refer to itself"), "{e}");
    let df = parse_dockerfile("Df", "FROM alpine\nCOPY --from=3 /x /y\n").unwrap();
    let e = df.build_plan(&o).unwrap_err();
    assert_eq!((e.line, e.column), (2, 13));
    assert!(e.message.contains("invalid stage index 3"), "{e}");
}

#[test]
fn global_arg_visible_in_stage_only_when_redeclared() {
    let df = parse_dockerfile("Df", "ARG V=1\nFROM a\nRUN x\nARG V\nRUN y\n").unwrap();
    let o = opts(None, &[]);
    let global = df.global_args(&o).unwrap();
    assert!(df.stage_env(0, 1, &global, &o).unwrap().is_empty());
    assert_eq!(
        df.stage_env(0, 3, &global, &o).unwrap(),
        vec![("V".to_string(), "1".to_string())]
    );
    let o = opts(None, &[("V", "2"), ("HTTP_PROXY", "p"), ("UNUSED", "u")]);
    assert_eq!(
        df.stage_env(0, 3, &global, &o).unwrap(),
        vec![("V".to_string(), "2".to_string())]
    );
    assert_eq!(df.unused_build_args(&o), vec!["UNUSED"]);
}

#[test]
fn predefined_platform_args_need_declaration_in_stage() {
    let df = parse_dockerfile("Df", "FROM a\nARG TARGETARCH\nRUN x\n").unwrap();
    let o = opts(None, &[]);
    let global = df.global_args(&o).unwrap();
    assert_eq!(
        df.stage_env(0, 1, &global, &o).unwrap(),
        vec![("TARGETARCH".to_string(), "arm64".to_string())]
    );
}

#[test]
fn env_and_arg_lines_see_the_environment_before_the_line() {
    let df = parse_dockerfile(
        "Df",
        "FROM a\nENV A=old\nENV A=new B=$A\nARG C=$A D=${B}x\n",
    )
    .unwrap();
    let o = opts(None, &[]);
    let env = df.stage_env(0, 3, &[], &o).unwrap();
    let get = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("A"), Some("new"));
    assert_eq!(get("B"), Some("old"));
    assert_eq!(get("C"), Some("new"));
    assert_eq!(get("D"), Some("oldx"));
}

#[test]
fn expansion_per_instruction() {
    let text = "FROM a\nCOPY --chown=$U --from=st $SRC ${DST:-/d}\nRUN echo $U\nWORKDIR /w/$U\nUSER $U\nEXPOSE $P\nLABEL l=$U\nVOLUME $U\nSTOPSIGNAL $SIG\nONBUILD RUN $U\nCOPY <<E <<'R' /x\n$U\nE\n$U\nR\nRUN --mount=type=cache,target=/c/$U,id=$U true\n";
    let df = parse_dockerfile("Df", text).unwrap();
    let env: Vec<(String, String)> = [
        ("U", "me"),
        ("S", "st"),
        ("SRC", "s r c"),
        ("P", "80"),
        ("SIG", "TERM"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = df.lexer();
    let x: Vec<Instruction> = df.stages[0]
        .commands
        .iter()
        .map(|c| c.expand("Df", &lexer, &env).unwrap().instruction)
        .collect();
    let Instruction::Copy(c) = &x[0] else {
        panic!()
    };
    assert_eq!(
        (c.chown.as_deref(), c.from.as_deref()),
        (Some("me"), Some("st")),
        "--from is never expanded (variables there are refused when parsing)"
    );
    assert_eq!((c.sources[0].as_str(), c.dest.as_str()), ("s r c", "/d"));
    let Instruction::Run(r) = &x[1] else { panic!() };
    assert_eq!(
        r.cmd,
        rbuild_dockerfile::instructions::ShellOrExec::Shell("echo $U".into()),
        "RUN is not expanded"
    );
    let Instruction::Workdir(w) = &x[2] else {
        panic!()
    };
    assert_eq!(w.path, "/w/me");
    let Instruction::User(u) = &x[3] else {
        panic!()
    };
    assert_eq!(u.user, "me");
    let Instruction::Expose(e) = &x[4] else {
        panic!()
    };
    assert_eq!(e.ports, vec!["80"]);
    let Instruction::Label(l) = &x[5] else {
        panic!()
    };
    assert_eq!(l.pairs[0].value, "me");
    let Instruction::Volume(v) = &x[6] else {
        panic!()
    };
    assert_eq!(v.volumes, vec!["me"]);
    let Instruction::StopSignal(s) = &x[7] else {
        panic!()
    };
    assert_eq!(s.signal, "TERM");
    let Instruction::OnBuild(o) = &x[8] else {
        panic!()
    };
    assert_eq!(o.expression, "RUN $U", "ONBUILD is not expanded");
    let Instruction::Copy(c) = &x[9] else {
        panic!()
    };
    assert_eq!(c.inline_sources[0].data, "me\n");
    assert_eq!(c.inline_sources[1].data, "$U\n");
    let Instruction::Run(r) = &x[10] else {
        panic!()
    };
    let m = r.mounts[0].parsed.as_ref().unwrap();
    assert_eq!(
        (m.target.as_deref(), m.id.as_deref()),
        (Some("/c/me"), Some("me"))
    );
}

#[test]
fn expansion_errors_name_the_line() {
    let df = parse_dockerfile("Df", "FROM a\nWORKDIR ${X:?must be set}\n").unwrap();
    let e = df.stages[0].commands[0]
        .expand("Df", &df.lexer(), &Vec::<(String, String)>::new())
        .unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().starts_with("Df:2:1: "), "{e}");
    assert!(e.message.contains("must be set"), "{e}");
}

/// BuildKit's `initOnBuildTriggers`: the ONBUILD triggers a base stage leaves run first in
/// the stage built FROM it, and a trigger's `COPY --from` (or `RUN --mount from=`) adds that
/// stage to the build (`testOnBuildNewDeps`), placed at the child's FROM line.
/// `testOnBuildNamedContext`: the ONBUILD triggers of a named context's image (read by the
/// build before planning) add the stages their `--from`s name, as a base stage's do.
#[test]
fn a_named_context_images_trigger_from_adds_that_stage() {
    let text = "FROM a AS otherstage\nRUN true\nFROM base AS inputstage\n\
                FROM scratch\nCOPY --from=inputstage /out/foo /bar\n";
    let without = parse_dockerfile("Df", text)
        .unwrap()
        .with_named_contexts(["base"]);
    assert_eq!(without.build_plan(&opts(None, &[])).unwrap().order, [1, 2]);
    let with = parse_dockerfile("Df", text)
        .unwrap()
        .with_named_contexts(["base"])
        .with_context_triggers(
            [(
                "base".to_string(),
                vec!["COPY --from=otherstage /testfile /out/foo".to_string()],
            )]
            .into(),
        );
    assert_eq!(with.build_plan(&opts(None, &[])).unwrap().order, [0, 1, 2]);
    // A trigger that is no single instruction fails at the stage's FROM.
    let bad = parse_dockerfile("Df", text)
        .unwrap()
        .with_named_contexts(["base"])
        .with_context_triggers([("base".to_string(), vec!["ONBUILD".to_string()])].into());
    let err = bad.build_plan(&opts(None, &[])).unwrap_err();
    assert_eq!(err.line, 3, "{err}");
}

#[test]
fn onbuild_trigger_from_adds_that_stage() {
    let df = parse_dockerfile(
        "Df",
        "FROM a AS dep\nFROM a AS parent\nONBUILD COPY --from=dep /x /y\n\
         ONBUILD RUN --mount=from=tools,target=/t true\nFROM a AS tools\n\
         FROM parent AS child\nRUN true\n",
    )
    .unwrap();
    let plan = df.build_plan(&opts(Some("parent"), &[])).unwrap();
    assert_eq!(plan.order, [1], "the parent's own build runs no trigger");
    let plan = df.build_plan(&opts(Some("child"), &[])).unwrap();
    let mut order = plan.order.clone();
    order.sort();
    assert_eq!(order, [0, 1, 2, 3]);
    assert_eq!(plan.order.last(), Some(&3));
    let o = opts(None, &[]);
    let global = df.global_args(&o).unwrap();
    let deps: Vec<(usize, DependencyKind, usize)> = df
        .dependencies(3, &global, &o)
        .unwrap()
        .iter()
        .map(|d| (d.stage, d.kind, d.line))
        .collect();
    assert_eq!(
        deps,
        [
            (1, DependencyKind::From, 6),
            (0, DependencyKind::CopyFrom, 6),
            (2, DependencyKind::MountFrom, 6)
        ]
    );
    // A trigger's own errors point at the child's FROM.
    let df = parse_dockerfile(
        "Df",
        "FROM a AS parent\nONBUILD COPY --from=7 /x /y\nFROM parent\nRUN true\n",
    )
    .unwrap();
    let e = df.build_plan(&opts(None, &[])).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("invalid stage index 7"), "{e}");
}

/// Named contexts (`--build-context`) come before stages and images, as BuildKit's
/// `dockerfile2llb` looks them up: a stage of that name is replaced (not built, its needs
/// dropped), and FROM, `COPY --from` and `RUN --mount from=` resolve to the context.
#[test]
fn named_contexts_replace_stages_and_images() {
    let text = "FROM busybox AS parent\nFROM parent AS base\nRUN echo base > /out\n\
                FROM base AS final\nCOPY --from=docker.io/library/alpine:latest / /\n\
                RUN --mount=from=tools,target=/t true\nCOPY --from=parent / /p\n";
    let o = opts(None, &[]);
    let plain = parse_dockerfile("Dockerfile", text).unwrap();
    let global = plain.global_args(&o).unwrap();
    assert_eq!(plain.stage_base(2, &global).unwrap(), Base::Stage(1));
    assert_eq!(plain.build_plan(&o).unwrap().order, [0, 1, 2]);

    let df = plain.with_named_contexts(["base", "alpine", "tools", "busybox:latest"]);
    assert_eq!(
        df.stage_base(2, &global).unwrap(),
        Base::Context("base".into())
    );
    assert_eq!(
        df.stage_base(1, &global).unwrap(),
        Base::Context("base".into())
    );
    assert_eq!(
        df.stage_base(0, &global).unwrap(),
        Base::Context("busybox".into())
    );
    // Only `COPY --from=parent` (no context of that name) is a stage the target needs.
    let deps = df.dependencies(2, &global, &o).unwrap();
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert_eq!((deps[0].stage, deps[0].kind), (0, DependencyKind::CopyFrom));
    assert!(df.dependencies(1, &global, &o).unwrap().is_empty());
    assert_eq!(df.build_plan(&o).unwrap().order, [0, 2]);
    // A replaced target cannot be the build's result: refused, naming the context.
    let err = df.build_plan(&opts(Some("base"), &[])).unwrap_err();
    assert!(err.message.contains("named context \"base\""), "{err}");

    assert_eq!(
        rbuild_dockerfile::named_context_key("docker.io/me/app:latest"),
        "me/app"
    );
    assert_eq!(
        rbuild_dockerfile::named_context_key("alpine:3.20"),
        "alpine:3.20"
    );
}
