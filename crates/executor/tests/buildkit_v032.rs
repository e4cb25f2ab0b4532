//! Behaviours of today's BuildKit (v0.32, Dockerfile frontend 1.26) where older builders
//! (the legacy builder, BuildKit v0.8 in docker 20.10) differ; each test names what BuildKit
//! does (see docs/fidelity.md, "BuildKit v0.32"). Needs root; the binary is its own sandbox
//! helper, so it has its own `main`.

mod support;
use support::Fixture;

use std::process::ExitCode;

use rbuild_image::{media_types, Descriptor, ImageConfig, Platform, RootFs};
use rbuild_layer::{write_dir_layer, WriteOptions};
use rbuild_sandbox::test_support::{busybox_rootfs, run_tests};

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    run_tests(&[
        (
            "default_path_for_a_base_without_one",
            default_path_for_a_base_without_one,
        ),
        ("run_gets_the_users_groups", run_gets_the_users_groups),
        (
            "copy_wildcard_matching_nothing_is_skipped",
            copy_wildcard_matching_nothing_is_skipped,
        ),
        ("arg_name_is_not_expanded", arg_name_is_not_expanded),
        (
            "arg_default_is_expanded_only_when_used",
            arg_default_is_expanded_only_when_used,
        ),
        (
            "stage_from_stage_keeps_arg_values",
            stage_from_stage_keeps_arg_values,
        ),
        ("workdir_owner_like_buildkit", workdir_owner_like_buildkit),
        ("chown_like_buildkit", chown_like_buildkit),
        (
            "chmod_applies_to_created_destination_dirs",
            chmod_applies_to_created_destination_dirs,
        ),
        (
            "json_with_a_comment_is_shell_form",
            json_with_a_comment_is_shell_form,
        ),
        (
            "source_date_epoch_sets_created",
            source_date_epoch_sets_created,
        ),
        (
            "host_network_needs_the_entitlement",
            host_network_needs_the_entitlement,
        ),
    ])
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Stores the files of `root` as a one-layer image tagged `tag` whose config has no Env at
/// all (what `docker import` or another tool makes), after `edit` changed it.
fn put_image(fx: &Fixture, root: &std::path::Path, tag: &str, edit: impl FnOnce(&mut ImageConfig)) {
    let mut writer = fx.store.blob_writer().unwrap();
    let info = write_dir_layer(root, &mut writer, &WriteOptions::default()).unwrap();
    let blob = writer.commit(Some(&info.digest)).unwrap();
    let host = Platform::host();
    let mut config = ImageConfig {
        architecture: host.architecture.clone(),
        os: host.os.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![info.diff_id],
            extra: Default::default(),
        },
        ..Default::default()
    };
    edit(&mut config);
    let record = fx
        .store
        .put_image(
            &config,
            &[Descriptor::new(
                media_types::OCI_LAYER_GZIP,
                blob.digest,
                blob.size,
            )],
        )
        .unwrap();
    fx.store.tag(tag, &record.manifest).unwrap();
}

/// A busybox image with no Env (no PATH), tagged `imported:1`.
fn imported_busybox(fx: &Fixture) {
    let root = fx.tmp.path().join("imported-root");
    std::fs::create_dir(&root).unwrap();
    busybox_rootfs(&root);
    put_image(fx, &root, "imported:1", |_| {});
}

/// BuildKit's dispatchStages: "make sure that PATH is always set". A stage whose base sets
/// no PATH gets the default one in its config, and `$PATH` expands to it.
fn default_path_for_a_base_without_one() {
    let fx = Fixture::new();
    imported_busybox(&fx);
    let built = fx.build_ok(
        "FROM imported:1\nENV PATH=/opt/venv/bin:$PATH\nRUN echo \"$PATH\" > /path.txt\n",
    );
    assert_eq!(
        built.config.config.env,
        vec![format!(
            "PATH=/opt/venv/bin:{}",
            DEFAULT_PATH.trim_start_matches("PATH=")
        )]
    );
    assert_eq!(
        built.read("path.txt"),
        "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    // Without an ENV the config still gets it.
    let built = fx.build_ok("FROM imported:1\nLABEL a=b\n");
    assert_eq!(built.config.config.env, vec![DEFAULT_PATH.to_string()]);
    // A base that sets PATH keeps its own, with no second entry.
    let built = fx.build_ok("FROM busybox\nENV A=1\n");
    assert_eq!(
        built.config.config.env,
        vec![DEFAULT_PATH.to_string(), "A=1".to_string()]
    );
}

/// BuildKit's runc executor: `GetUser` takes the supplementary groups /etc/group lists for
/// the user (none for `uid:gid`, or a named group), and `ensureAdditionalGids` puts the
/// primary group first among them.
fn run_gets_the_users_groups() {
    let fx = Fixture::new();
    // The base's /etc/group: root:x:0:, wheel:x:10:app, app:x:1000:.
    let built = fx.build_ok(
        "FROM busybox\n\
         RUN grep ^Groups: /proc/self/status > /root.txt\n\
         USER app\n\
         RUN grep ^Groups: /proc/self/status > /tmp/app.txt\n\
         USER 1000\n\
         RUN grep ^Groups: /proc/self/status > /tmp/uid.txt\n\
         USER 1000:1000\n\
         RUN grep ^Groups: /proc/self/status > /tmp/uidgid.txt\n\
         USER app:wheel\n\
         RUN grep ^Groups: /proc/self/status > /tmp/named.txt\n",
    );
    let groups = |rel: &str| -> Vec<u32> {
        let text = built.read(rel);
        let mut ids: Vec<u32> = text
            .trim_start_matches("Groups:")
            .split_whitespace()
            .map(|g| g.parse().unwrap_or_else(|e| panic!("{rel}: {text:?}: {e}")))
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(groups("root.txt"), vec![0]);
    assert_eq!(groups("tmp/app.txt"), vec![10, 1000]);
    assert_eq!(groups("tmp/uid.txt"), vec![10, 1000]);
    assert_eq!(groups("tmp/uidgid.txt"), vec![1000]);
    assert_eq!(groups("tmp/named.txt"), vec![10]);
}

/// BuildKit's `convert_copy.go` copies every local source with `AllowWildcard: true,
/// AllowEmptyWildcard: true`, and the file op backend returns without copying when a
/// pattern matches nothing. Measured with BuildKit v0.32.2: `COPY foo nomatch* /` copies
/// `foo`; `COPY nomatch* /none/` succeeds with an empty layer and no `/none`.
fn copy_wildcard_matching_nothing_is_skipped() {
    let fx = Fixture::new();
    fx.file("foo", "contents0", 0o644);
    let built = fx.build_ok(
        "FROM busybox\nCOPY foo nomatch* /\nCOPY nomatch* /none/\nCOPY nomatch* /nodir\n",
    );
    assert_eq!(built.read("foo"), "contents0");
    assert!(!built.path("none").exists());
    assert!(!built.path("nodir").exists());
    // One layer per COPY; the last two hold nothing.
    assert_eq!(built.layers.len(), 4);
    assert_eq!(fx.layer_paths(&built.layers[1]), vec!["foo".to_string()]);
    assert!(fx.layer_paths(&built.layers[2]).is_empty());
    assert!(fx.layer_paths(&built.layers[3]).is_empty());
    // A literal source that is missing is still an error.
    let err = fx.build_err("FROM busybox\nCOPY foo missing /\n");
    assert!(err.contains("missing"), "{err}");
}

/// BuildKit's `dispatch` expands every instruction but ARG ("ARG command value could be
/// ignored, so defer handling the expansion error": `!isArg`), and `dispatchArg` expands only
/// the default value. Measured with BuildKit v0.32.2: `ARG ${name}=value` declares a
/// variable named `${name}` (history `ARG ${name}=value`), and `$FOO` stays empty.
fn arg_name_is_not_expanded() {
    let fx = Fixture::new();
    let built =
        fx.build_ok("FROM busybox\nARG name=FOO\nARG ${name}=value\nRUN echo \"[$FOO]\" > /foo\n");
    assert_eq!(built.read("foo"), "[]\n");
    let history = built.created_by();
    assert!(
        history.contains(&"ARG ${name}=value".to_string()),
        "{history:?}"
    );
    assert!(
        history.contains(
            &"RUN |2 name=FOO ${name}=value /bin/sh -c echo \"[$FOO]\" > /foo # buildkit"
                .to_string()
        ),
        "{history:?}"
    );
}

/// BuildKit's `dispatchState.init`: a stage built FROM an earlier stage takes its LLB state
/// (`ds.state = ds.base.state`, the ARG values in its environment) and its ARGs
/// (`ds.buildArgs = append(ds.buildArgs, ds.base.buildArgs...)`). Measured with BuildKit
/// v0.32.2: the child's RUN sees `FLAVOR=spicy`, `LABEL l=$FLAVOR` gives `spicy`, and the
/// RUN's history lists the parent's ARGs (`RUN |1 FLAVOR=spicy ...`).
fn stage_from_stage_keeps_arg_values() {
    let fx = Fixture::new();
    let dockerfile = "FROM busybox AS base\n\
                      ARG FLAVOR=spicy\n\
                      ENV KEPT=1\n\
                      FROM base\n\
                      RUN echo \"flavor=$FLAVOR kept=$KEPT\" > /child\n\
                      LABEL l=$FLAVOR\n\
                      ARG FLAVOR\n\
                      ARG OTHER=o\n\
                      RUN echo \"$FLAVOR $OTHER\" > /second\n";
    let built = fx.build_ok(dockerfile);
    assert_eq!(built.read("child"), "flavor=spicy kept=1\n");
    assert_eq!(built.read("second"), "spicy o\n");
    assert_eq!(
        built.config.config.labels.get("l").map(String::as_str),
        Some("spicy")
    );
    // ARG values never reach the config's Env.
    assert!(!built
        .config
        .config
        .env
        .iter()
        .any(|e| e.starts_with("FLAVOR")));
    let history = built.created_by();
    assert!(
        history.contains(
            &"RUN |1 FLAVOR=spicy /bin/sh -c echo \"flavor=$FLAVOR kept=$KEPT\" > /child # buildkit"
                .to_string()
        ),
        "{history:?}"
    );
    assert!(
        history.contains(
            &"RUN |2 FLAVOR=spicy OTHER=o /bin/sh -c echo \"$FLAVOR $OTHER\" > /second # buildkit"
                .to_string()
        ),
        "{history:?}"
    );
    // It cannot name a `COPY --from` stage: v0.32 never expands `--from` and refuses a
    // variable there ("variable expansion is not supported for --from").
    let err = fx.build_err(
        "FROM busybox AS src\nRUN echo from-src > /made\n\
         FROM busybox AS base\nARG SRC=src\n\
         FROM base\nCOPY --from=$SRC /made /copied\n",
    );
    assert!(
        err.contains("Dockerfile:6")
            && err.contains("variable expansion is not supported for --from"),
        "{err}"
    );
    // A --build-arg reaches the parent's ARG, and through it the child.
    let built = fx.built(&fx.request(dockerfile).with_build_arg("FLAVOR", "mild"));
    assert_eq!(built.read("child"), "flavor=mild kept=1\n");
}

/// BuildKit creates WORKDIR with `llb.Mkdir(wd, 0755, llb.WithParents(true),
/// llb.WithUser(user))`: `WithUser` parses `root` and numbers as ids, and the solver's
/// `readUser` gives an id user the same group id and a name missing from /etc/passwd (or a
/// missing file) id 0. Measured with BuildKit v0.32.2, `FROM scratch` (no /etc/passwd):
/// `USER root` → /a 0:0, `USER 1000` → /b and /b/c 1000:1000, `USER nobody` → /d 0:0,
/// `USER 1000:5` → /e 1000:5, `USER 7:wheel` → /g 7:7; with the passwd and group of the
/// busybox base: `USER app` → 1000:1000, `USER 1000` → 1000:1000, `USER app:wheel` →
/// 1000:10, `USER nobody` → 0:0.
fn workdir_owner_like_buildkit() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new();
    let root = fx.tmp.path().join("no-passwd-root");
    std::fs::create_dir(&root).unwrap();
    busybox_rootfs(&root);
    std::fs::remove_file(root.join("etc/passwd")).unwrap();
    std::fs::remove_file(root.join("etc/group")).unwrap();
    put_image(&fx, &root, "nopasswd:1", |_| {});
    let owner = |built: &support::Built, rel: &str| {
        let md = built.meta(rel);
        (md.uid(), md.gid())
    };
    let built = fx.build_ok(
        "FROM nopasswd:1\n\
         USER root\nWORKDIR /a\n\
         USER 1000\nWORKDIR /b/c\n\
         USER nobody\nWORKDIR /d\n\
         USER 1000:5\nWORKDIR /e\n\
         USER 7:wheel\nWORKDIR /g\n",
    );
    assert_eq!(owner(&built, "a"), (0, 0));
    assert_eq!(owner(&built, "b"), (1000, 1000));
    assert_eq!(owner(&built, "b/c"), (1000, 1000));
    assert_eq!(owner(&built, "d"), (0, 0));
    assert_eq!(owner(&built, "e"), (1000, 5));
    assert_eq!(owner(&built, "g"), (7, 7));
    let built = fx.build_ok(
        "FROM busybox\n\
         USER app\nWORKDIR /f\n\
         USER 1000\nWORKDIR /h\n\
         USER app:wheel\nWORKDIR /i\n\
         USER nobody\nWORKDIR /j\n",
    );
    assert_eq!(owner(&built, "f"), (1000, 1000));
    assert_eq!(owner(&built, "h"), (1000, 1000));
    assert_eq!(owner(&built, "i"), (1000, 10));
    assert_eq!(owner(&built, "j"), (0, 0));
    // A RUN as a user no passwd lists still fails, as under BuildKit's runc executor.
    let err = fx.build_err("FROM busybox\nUSER nobody\nRUN true\n");
    assert!(err.contains("nobody"), "{err}");
}

/// Measured with BuildKit v0.32.2 (`FROM scratch`): `COPY --chmod=600 dir /new/`, `ADD
/// --chmod=600 dir /addnew/` and `COPY --chmod=600 file /new2/a/` give the destination
/// directories they create (parents too) the `--chmod` mode, as the copied entries;
/// BuildKit v0.8 left them 0755.
fn chmod_applies_to_created_destination_dirs() {
    let fx = Fixture::new();
    fx.file("dir/f", "f\n", 0o644)
        .file("dir/sub/s", "s\n", 0o644)
        .file("file", "file\n", 0o644);
    let built = fx.build_ok(
        "FROM busybox\n\
         COPY --chmod=600 dir /new/\n\
         COPY --chmod=600 file /new2/a/\n\
         ADD --chmod=600 dir /addnew/\n\
         ADD --chmod=640 file /addnew2/b/\n",
    );
    for (path, mode) in [
        ("new", 0o600),
        ("new/f", 0o600),
        ("new/sub", 0o600),
        ("new/sub/s", 0o600),
        ("new2", 0o600),
        ("new2/a", 0o600),
        ("new2/a/file", 0o600),
        ("addnew", 0o600),
        ("addnew/f", 0o600),
        ("addnew/sub", 0o600),
        ("addnew/sub/s", 0o600),
        ("addnew2", 0o640),
        ("addnew2/b", 0o640),
        ("addnew2/b/file", 0o640),
    ] {
        assert_eq!(built.mode(path), mode, "{path}");
    }
}

/// Dockerfile 1.26 takes `ENTRYPOINT ["x"] # comment` as shell form (a comment is only a
/// comment at the start of a line, and the rest is not a JSON array). Measured with
/// BuildKit v0.32.2: Entrypoint `["/bin/sh", "-c", "[\"x\"] # comment"]`, and the same
/// for CMD.
fn json_with_a_comment_is_shell_form() {
    let fx = Fixture::new();
    let built =
        fx.build_ok("FROM busybox\nENTRYPOINT [\"x\"] # comment\nCMD [\"y\", \"z\"]   # other\n");
    assert_eq!(
        built.config.config.entrypoint,
        Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            "[\"x\"] # comment".to_string()
        ])
    );
    assert_eq!(
        built.config.config.cmd,
        Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            "[\"y\", \"z\"]   # other".to_string()
        ])
    );
    assert!(
        built
            .created_by()
            .contains(&"CMD [\"/bin/sh\" \"-c\" \"[\\\"y\\\", \\\"z\\\"]   # other\"]".to_string()),
        "{:?}",
        built.created_by()
    );
}

/// BuildKit's exporter (`patchImageConfig`, `exporter/containerimage/writer.go`) with
/// SOURCE_DATE_EPOCH: the frontend drops the base's `created` (`img.Created = nil`), the
/// config's `created` is the last history entry's, clamped to the epoch; the entries the
/// build adds get the epoch, the base's own entries keep their times ("Retain the
/// timestamp for the base image layers").
fn source_date_epoch_sets_created() {
    let fx = Fixture::new();
    let root = fx.tmp.path().join("dated-root");
    std::fs::create_dir(&root).unwrap();
    busybox_rootfs(&root);
    let base_time = "2030-01-02T03:04:05Z";
    put_image(&fx, &root, "dated:1", |config| {
        config.created = Some(base_time.into());
        config.config.env = vec![DEFAULT_PATH.into()];
        config.history = vec![rbuild_image::History {
            created: Some(base_time.into()),
            created_by: "base layer".into(),
            ..Default::default()
        }];
    });
    let epoch = 1_700_000_000;
    let epoch_text = "2023-11-14T22:13:20Z";
    for dockerfile in [
        "FROM dated:1\nRUN echo x > /x\nLABEL a=b\n",
        "FROM dated:1\nLABEL a=b\n",
        // No entry of its own: the base's time, clamped.
        "FROM dated:1\n",
    ] {
        let mut request = fx.request(dockerfile);
        request.source_date_epoch = Some(epoch);
        let built = fx.built(&request);
        assert_eq!(
            built.config.created.as_deref(),
            Some(epoch_text),
            "{dockerfile}"
        );
        let times: Vec<Option<&str>> = built
            .config
            .history
            .iter()
            .map(|h| h.created.as_deref())
            .collect();
        let mut want = vec![Some(base_time)];
        want.resize(built.config.history.len(), Some(epoch_text));
        assert_eq!(times, want, "{dockerfile}");
    }
}

/// `COPY --chown` goes through the same `llb.WithUser` and `readUser` as WORKDIR. Measured
/// with BuildKit v0.32.2, `FROM scratch`: `--chown=root:root` → 0:0, `7:wheel` → 7:7,
/// `nobody` → 0:0, `1000` → 1000:1000, `nobody:5` → 0:5. rbuild warns about the names it
/// did not find.
fn chown_like_buildkit() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new();
    let root = fx.tmp.path().join("no-passwd-root");
    std::fs::create_dir(&root).unwrap();
    busybox_rootfs(&root);
    std::fs::remove_file(root.join("etc/passwd")).unwrap();
    std::fs::remove_file(root.join("etc/group")).unwrap();
    put_image(&fx, &root, "nopasswd:1", |_| {});
    fx.file("f", "f\n", 0o644);
    let built = fx.build_ok(
        "FROM nopasswd:1\n\
         COPY --chown=root:root f /a\n\
         COPY --chown=7:wheel f /b\n\
         COPY --chown=nobody f /c\n\
         COPY --chown=1000 f /d\n\
         COPY --chown=nobody:5 f /e\n",
    );
    for (path, ids) in [
        ("a", (0, 0)),
        ("b", (7, 7)),
        ("c", (0, 0)),
        ("d", (1000, 1000)),
        ("e", (0, 5)),
    ] {
        let md = built.meta(path);
        assert_eq!((md.uid(), md.gid()), ids, "{path}");
    }
    let warnings: Vec<String> = built
        .events
        .events
        .iter()
        .filter_map(|e| match e {
            rbuild_executor::Event::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("COPY --chown=7:wheel") && w.contains("group \"wheel\"")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("COPY --chown=nobody:") && w.contains("user \"nobody\"")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("root:root")),
        "root needs no passwd: {warnings:?}"
    );
}

/// `dispatchArg` expands an ARG's default only when no build arg replaces it (`if hasValue
/// { ... } else if hasDefault { ... ProcessWord(*arg.Value, env) ... }`), and `dispatch`
/// defers ARG's expansion for that reason. Measured with BuildKit v0.32.2: `ARG
/// A=${B:?required}` builds with `build-arg:A=x` (label `a=x`) and fails without it.
fn arg_default_is_expanded_only_when_used() {
    let fx = Fixture::new();
    let dockerfile = "FROM busybox AS base\nLABEL b=c\n\
                      FROM busybox\nARG A=${B:?required}\n\
                      COPY --from=base /bin/busybox /copied\n";
    let request = fx
        .request("FROM busybox\nARG A=${B:?required}\nLABEL a=$A\n")
        .with_build_arg("A", "x");
    let built = fx.built(&request);
    assert_eq!(
        built.config.config.labels.get("a").map(String::as_str),
        Some("x")
    );
    assert!(built.created_by().contains(&"ARG A=x".to_string()));
    let err = fx.build_err("FROM busybox\nARG A=${B:?required}\nLABEL a=$A\n");
    assert!(err.contains("required"), "{err}");
    // Each default sees the ARGs before it on the same line (the state is updated per
    // ARG); ENV's words all see the environment from before the line. Measured with
    // v0.32.2: `ARG A=1 B=$A` gives `B=1`, `ENV C=2 D=$C` gives `D=`.
    let built = fx.build_ok("FROM busybox\nARG A=1 B=$A\nENV C=2 D=$C\nLABEL b=$B d=$D\n");
    assert_eq!(
        built.config.config.labels.get("b").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        built.config.config.labels.get("d").map(String::as_str),
        Some("")
    );
    let history = built.created_by();
    assert!(history.contains(&"ARG A=1 B=1".to_string()), "{history:?}");
    assert!(history.contains(&"ENV C=2 D=".to_string()), "{history:?}");
    // The stage graph reads ARGs the same way.
    let built = fx.built(&fx.request(dockerfile).with_build_arg("A", "x"));
    assert!(built.path("copied").is_file());
}

/// BuildKit refuses to load a build with `RUN --network=host` unless the client grants the
/// `network.host` entitlement ("network.host is not allowed"; `testRunHostNetwork`), also
/// when the step is an ONBUILD trigger or in a stage the target needs; rbuild's default
/// network stays the host's without the grant. The refusal comes before any step runs.
fn host_network_needs_the_entitlement() {
    let fx = Fixture::new();
    let dockerfile = "FROM busybox\nRUN echo ran > /ran\nRUN --network=host echo host > /host\n";
    let (result, events) = fx.build_with_events(&fx.request(dockerfile));
    let err = match result {
        Ok(_) => panic!("RUN --network=host built without the entitlement"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("Dockerfile:3") && err.contains("network.host is not allowed"),
        "{err}"
    );
    // Refused at load: not even the first RUN ran.
    assert!(events.ran().is_empty(), "{:?}", events.ran());
    let mut request = fx.request(dockerfile);
    request.allow_network_host = true;
    let built = fx.built(&request);
    assert_eq!(built.events.ran().len(), 2, "{:?}", built.events.ran());
    assert_eq!(built.read("host"), "host\n");
    assert_eq!(built.read("ran"), "ran\n");

    // A stage the target needs counts; one it does not need is not loaded.
    let staged = "FROM busybox AS net\nRUN --network=host true\n\
                  FROM busybox AS unused\nRUN --network=host true\n\
                  FROM busybox\nCOPY --from=net /etc/passwd /p\n";
    let err = match fx.build(&fx.request(staged)) {
        Ok(_) => panic!("a needed stage's RUN --network=host built"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Dockerfile:2"), "{err}");
    let mut only_unused = fx.request(staged);
    only_unused.target = Some("unused".into());
    assert!(fx.build(&only_unused).is_err());
    let no_net =
        "FROM busybox AS unused\nRUN --network=host true\nFROM busybox\nRUN echo ok > /ok\n";
    assert_eq!(fx.build_ok(no_net).read("ok"), "ok\n");

    // `security.insecure` is never granted: refused the same way, before any step.
    let (result, events) = fx.build_with_events(
        &fx.request("FROM busybox\nRUN echo x > /x\nRUN --security=insecure true\n"),
    );
    let err = result
        .map(|_| ())
        .expect_err("--security=insecure")
        .to_string();
    assert!(
        err.contains("Dockerfile:3") && err.contains("security.insecure is not allowed"),
        "{err}"
    );
    assert!(events.ran().is_empty(), "{:?}", events.ran());

    // An ONBUILD trigger is checked when the child loads it.
    fx.build_ok("FROM busybox\nONBUILD RUN --network=host true\n");
    let err = fx.build_err("FROM test:latest\nRUN echo child\n");
    assert!(
        err.contains("ONBUILD trigger") && err.contains("network.host is not allowed"),
        "{err}"
    );
}
