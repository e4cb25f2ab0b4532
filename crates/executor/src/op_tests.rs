//! The keying function: every input counts, the encoding is stable, misses name inputs.

use super::*;

fn mount() -> MountOp {
    MountOp {
        kind: "bind".into(),
        target: Some("/src".into()),
        source: Some("src".into()),
        from: None,
        read_only: true,
        size_limit: None,
        id: None,
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
        content: MountContent::Context(vec![("src/a".into(), Digest::of(b"a"))]),
    }
}

fn run_op() -> RunOp {
    RunOp {
        parent: Digest::of(b"parent"),
        command: vec!["/bin/sh".into(), "-c".into(), "make".into()],
        script: None,
        env: vec![("PATH".into(), "/bin".into()), ("V".into(), "1".into())],
        user: "app".into(),
        workdir: "/work".into(),
        build_network: "Host".into(),
        network: "default".into(),
        security: "sandbox".into(),
        mounts: vec![mount()],
        layer_format: LayerFormat("Gzip".into()),
    }
}

fn copy_op() -> CopyOp {
    CopyOp {
        parent: Digest::of(b"parent"),
        is_add: false,
        sources: vec!["app.txt".into()],
        inline: vec![],
        dest: "/app/".into(),
        workdir: "/".into(),
        from: None,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: vec![],
        checksum: None,
        unpack: None,
        keep_git_dir: None,
        contents: vec![SourceContent::Context(vec![(
            "app.txt".into(),
            Digest::of(b"1"),
        )])],
        layer_format: LayerFormat("Gzip".into()),
    }
}

fn workdir_op() -> WorkdirOp {
    WorkdirOp {
        parent: Digest::of(b"parent"),
        path: "/work".into(),
        user: String::new(),
        layer_format: LayerFormat("Gzip".into()),
    }
}

/// Named changes of an op.
type Changes<T> = Vec<(&'static str, Box<dyn Fn(&mut T)>)>;

/// Applies each change to `base` and checks that every result has a key of its own.
fn each_change_changes_the_key<T: Clone>(base: &T, op: impl Fn(T) -> StepOp, changes: Changes<T>) {
    let mut seen = std::collections::BTreeMap::new();
    seen.insert(op(base.clone()).key(), "unchanged");
    for (what, change) in changes {
        let mut changed = base.clone();
        change(&mut changed);
        let key = op(changed).key();
        if let Some(other) = seen.insert(key, what) {
            panic!("changing {what} gives the key of {other}");
        }
    }
}

#[test]
fn changing_any_input_of_a_run_changes_its_key() {
    type Change = Box<dyn Fn(&mut RunOp)>;
    let m =
        |f: fn(&mut MountOp)| -> Change { Box::new(move |op: &mut RunOp| f(&mut op.mounts[0])) };
    let changes: Vec<(&str, Change)> = vec![
        ("parent", Box::new(|op| op.parent = Digest::of(b"other"))),
        ("command", Box::new(|op| op.command[2] = "make test".into())),
        (
            "command split",
            Box::new(|op| op.command = vec!["/bin/sh".into(), "-cmake".into()]),
        ),
        (
            "script",
            Box::new(|op| op.script = Some(("/dev/pipes/EOF".into(), "#!/bin/sh".into()))),
        ),
        ("env value", Box::new(|op| op.env[1].1 = "2".into())),
        ("env name", Box::new(|op| op.env[1].0 = "W".into())),
        (
            "env added",
            Box::new(|op| op.env.push(("X".into(), String::new()))),
        ),
        ("user", Box::new(|op| op.user = "root".into())),
        ("workdir", Box::new(|op| op.workdir = "/".into())),
        (
            "build network",
            Box::new(|op| op.build_network = "None".into()),
        ),
        ("network", Box::new(|op| op.network = "none".into())),
        ("security", Box::new(|op| op.security = "insecure".into())),
        ("mount added", Box::new(|op| op.mounts.push(mount()))),
        ("mount removed", Box::new(|op| op.mounts.clear())),
        ("mount kind", m(|m| m.kind = "cache".into())),
        ("mount target", m(|m| m.target = Some("/other".into()))),
        ("mount source", m(|m| m.source = None)),
        ("mount from", m(|m| m.from = Some("builder".into()))),
        ("mount read_only", m(|m| m.read_only = false)),
        ("mount size", m(|m| m.size_limit = Some(1024))),
        ("mount id", m(|m| m.id = Some("x".into()))),
        ("mount sharing", m(|m| m.sharing = Some("locked".into()))),
        ("mount required", m(|m| m.required = true)),
        ("mount env", m(|m| m.env = Some("TOKEN".into()))),
        ("mount mode", m(|m| m.mode = Some(0o600))),
        ("mount uid", m(|m| m.uid = Some(1))),
        ("mount gid", m(|m| m.gid = Some(1))),
        (
            "mount content",
            m(|m| m.content = MountContent::Context(vec![("src/a".into(), Digest::of(b"b"))])),
        ),
        (
            "mount content from",
            m(|m| m.content = MountContent::From(Digest::of(b"stage"))),
        ),
        ("mount content none", m(|m| m.content = MountContent::None)),
        (
            "layer format",
            Box::new(|op| op.layer_format = LayerFormat("Zstd".into())),
        ),
    ];
    each_change_changes_the_key(&run_op(), StepOp::Run, changes);
}

#[test]
fn changing_any_input_of_a_copy_changes_its_key() {
    type Change = Box<dyn Fn(&mut CopyOp)>;
    let changes: Vec<(&str, Change)> = vec![
        ("parent", Box::new(|op| op.parent = Digest::of(b"other"))),
        ("is_add", Box::new(|op| op.is_add = true)),
        ("sources", Box::new(|op| op.sources.push("b".into()))),
        (
            "inline",
            Box::new(|op| op.inline.push(("f".into(), "body".into(), false))),
        ),
        ("dest", Box::new(|op| op.dest = "/app".into())),
        ("workdir", Box::new(|op| op.workdir = "/w".into())),
        ("from", Box::new(|op| op.from = Some("builder".into()))),
        ("chown", Box::new(|op| op.chown = Some("1".into()))),
        ("chown empty", Box::new(|op| op.chown = Some(String::new()))),
        ("chmod", Box::new(|op| op.chmod = Some("644".into()))),
        ("link", Box::new(|op| op.link = true)),
        ("parents", Box::new(|op| op.parents = true)),
        ("exclude", Box::new(|op| op.exclude.push("*.tmp".into()))),
        (
            "checksum",
            Box::new(|op| op.checksum = Some("sha256:x".into())),
        ),
        ("unpack", Box::new(|op| op.unpack = Some(false))),
        ("keep_git_dir", Box::new(|op| op.keep_git_dir = Some(true))),
        (
            "content",
            Box::new(|op| {
                op.contents = vec![SourceContent::Context(vec![(
                    "app.txt".into(),
                    Digest::of(b"2"),
                )])]
            }),
        ),
        (
            "content url",
            Box::new(|op| {
                op.contents = vec![SourceContent::Url {
                    url: "u".into(),
                    content: "c".into(),
                }]
            }),
        ),
        (
            "content git",
            Box::new(|op| {
                op.contents = vec![SourceContent::Git {
                    url: "u".into(),
                    commit: "c".into(),
                }]
            }),
        ),
        (
            "content from",
            Box::new(|op| op.contents = vec![SourceContent::From(Digest::of(b"s"))]),
        ),
        (
            "layer format",
            Box::new(|op| op.layer_format = LayerFormat("Zstd".into())),
        ),
    ];
    each_change_changes_the_key(&copy_op(), StepOp::Copy, changes);
}

#[test]
fn changing_any_input_of_a_workdir_changes_its_key() {
    type Change = Box<dyn Fn(&mut WorkdirOp)>;
    let changes: Vec<(&str, Change)> = vec![
        ("parent", Box::new(|op| op.parent = Digest::of(b"other"))),
        ("path", Box::new(|op| op.path = "/w".into())),
        ("user", Box::new(|op| op.user = "app".into())),
        (
            "layer format",
            Box::new(|op| op.layer_format = LayerFormat("Zstd".into())),
        ),
    ];
    each_change_changes_the_key(&workdir_op(), StepOp::Workdir, changes);
}

#[test]
fn ops_of_different_kinds_with_alike_fields_differ() {
    // A WORKDIR and a RUN whose inputs would read alike without the op's name.
    let w = StepOp::Workdir(workdir_op());
    let c = StepOp::Copy(CopyOp {
        is_add: true,
        ..copy_op()
    });
    assert_ne!(w.key(), StepOp::Run(run_op()).key());
    assert_ne!(c.key(), StepOp::Copy(copy_op()).key());
}

#[test]
fn the_same_op_gives_the_same_key_in_every_build() {
    // Pinned: a change of the encoding must bump KEY_VERSION, which changes this value.
    // The value is sha256 of "rbuild step key v2\n" then, per input, "<name len>:<value
    // len>\n<name><value>" (docs/cache.md), computed apart from this code.
    let key = StepOp::Workdir(workdir_op()).key();
    assert_eq!(key, StepOp::Workdir(workdir_op()).key());
    assert_eq!(KEY_VERSION, "rbuild step key v2");
    assert_eq!(
        key.to_string(),
        "sha256:1a584ec2eb116ac22e6f78e6e0800efb81c985706f48d3708315b3599eba9021"
    );
}

#[test]
fn a_large_source_is_one_aggregate_input() {
    let entries: Vec<(String, Digest)> = (0..=PER_FILE_LIMIT)
        .map(|i| (format!("f{i}"), Digest::of(i.to_string().as_bytes())))
        .collect();
    let mut op = copy_op();
    op.contents = vec![SourceContent::Context(entries.clone())];
    let inputs = StepOp::Copy(op.clone()).inputs();
    let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"source (501 files)"), "{names:?}");
    let before = StepOp::Copy(op.clone()).key();
    let mut changed = entries;
    changed[300].1 = Digest::of(b"changed");
    op.contents = vec![SourceContent::Context(changed)];
    assert_ne!(StepOp::Copy(op).key(), before);
}

#[test]
fn explain_names_the_input_that_changed() {
    let before = StepOp::Run(run_op()).explain_inputs();
    let explain = |change: &dyn Fn(&mut RunOp)| {
        let mut op = run_op();
        change(&mut op);
        explain_miss(Some(&before), &StepOp::Run(op).explain_inputs())
    };
    assert_eq!(explain(&|op| op.env[1].1 = "2".into()), "env V changed");
    assert_eq!(
        explain(&|op| op.parent = Digest::of(b"x")),
        "the step before it changed"
    );
    assert_eq!(explain(&|op| op.user = "root".into()), "user changed");
    assert_eq!(
        explain(&|op| op.mounts[0].uid = Some(1)),
        "mount 0 /src changed"
    );
    assert_eq!(
        explain(&|op| op.mounts[0].content =
            MountContent::Context(vec![("src/a".into(), Digest::of(b"b"))])),
        "mount /src src/a changed"
    );
    assert_eq!(
        explain(&|op| op.env.push(("NEW".into(), "1".into()))),
        "env NEW is new"
    );
    assert_eq!(
        explain(&|op| op.mounts.clear()),
        "mount /src src/a is gone; mount 0 /src is gone"
    );
    assert_eq!(
        explain(&|_| {}),
        "inputs unchanged, but the cached result is gone (pruned, or --no-cache)"
    );
    assert_eq!(explain_miss(None, &before), "no earlier build of this step");

    let before = StepOp::Copy(copy_op()).explain_inputs();
    let mut op = copy_op();
    op.contents = vec![SourceContent::Context(vec![
        ("app.txt".into(), Digest::of(b"1")),
        ("dir/b".into(), Digest::of(b"b")),
    ])];
    assert_eq!(
        explain_miss(Some(&before), &StepOp::Copy(op).explain_inputs()),
        "source dir/b is new"
    );
}

#[test]
fn long_values_are_kept_as_digests_for_explaining() {
    let mut op = run_op();
    op.command = vec!["x".repeat(EXPLAIN_VALUE_LIMIT + 1)];
    let inputs = StepOp::Run(op).explain_inputs();
    assert!(
        inputs.inputs["command"].starts_with("sha256:"),
        "{inputs:?}"
    );
}

#[test]
fn an_op_serialises_with_its_inputs_as_values() {
    let json = serde_json::to_value(StepOp::Run(run_op())).unwrap();
    let run = &json["Run"];
    assert_eq!(run["command"][2], "make");
    assert_eq!(run["parent"], Digest::of(b"parent").to_string());
    assert_eq!(run["mounts"][0]["kind"], "bind");
    assert_eq!(
        run["mounts"][0]["content"]["Context"][0][1],
        Digest::of(b"a").to_string()
    );
    assert_eq!(run["layer_format"], "Gzip");
}
