//! End-to-end builds with real RUN steps. Needs root (CI runs it as root) and Debian's
//! busybox-static. The binary is its own sandbox helper, so it has its own `main`.

mod support;
use support::Fixture;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use rbuild_executor::Event;
use rbuild_layer::{write_dir_layer, WriteOptions};
use rbuild_sandbox::test_support::run_tests;
use rbuild_sandbox::Isolation;

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    run_tests(&[
        (
            "config_instructions_and_history",
            config_instructions_and_history,
        ),
        (
            "run_env_user_workdir_and_build_args",
            run_env_user_workdir_and_build_args,
        ),
        ("copy_semantics", copy_semantics),
        (
            "multi_stage_copy_from_and_target",
            multi_stage_copy_from_and_target,
        ),
        (
            "dockerignore_exclusion_is_an_error",
            dockerignore_exclusion_is_an_error,
        ),
        (
            "sources_outside_the_context_are_errors",
            sources_outside_the_context_are_errors,
        ),
        (
            "failing_run_reports_command_code_and_output",
            failing_run_reports_command_code_and_output,
        ),
        (
            "onbuild_is_stored_and_triggers_run_in_child",
            onbuild_is_stored_and_triggers_run_in_child,
        ),
        ("add_extracts_local_tar", add_extracts_local_tar),
        ("run_heredoc_and_exec_form", run_heredoc_and_exec_form),
        ("secret_and_cache_mounts", secret_and_cache_mounts),
        (
            "secret_env_reaches_the_step_alone",
            secret_env_reaches_the_step_alone,
        ),
        (
            "cache_mount_source_stays_in_the_cache",
            cache_mount_source_stays_in_the_cache,
        ),
        (
            "unknown_target_and_stage_are_errors",
            unknown_target_and_stage_are_errors,
        ),
        (
            "overlay_and_chroot_steps_make_the_same_layer",
            overlay_and_chroot_steps_make_the_same_layer,
        ),
        (
            "a_write_to_one_name_of_an_earlier_hard_link_copies_only_it_up",
            a_write_to_one_name_of_an_earlier_hard_link_copies_only_it_up,
        ),
        (
            "independent_stages_run_at_the_same_time",
            independent_stages_run_at_the_same_time,
        ),
        (
            "a_failing_stage_stops_the_stages_beside_it",
            a_failing_stage_stops_the_stages_beside_it,
        ),
        (
            "cache_mount_sharing_between_stages_running_at_once",
            cache_mount_sharing_between_stages_running_at_once,
        ),
        (
            "builds_share_an_extracted_base_and_never_change_it",
            builds_share_an_extracted_base_and_never_change_it,
        ),
        (
            "builds_at_once_make_one_extracted_tree",
            builds_at_once_make_one_extracted_tree,
        ),
        (
            "a_discarded_stage_is_never_compressed_and_a_rebuild_compresses_nothing",
            a_discarded_stage_is_never_compressed_and_a_rebuild_compresses_nothing,
        ),
        (
            "a_discarded_stage_writes_no_layer_until_an_image_needs_it",
            a_discarded_stage_writes_no_layer_until_an_image_needs_it,
        ),
        (
            "builds_at_once_keep_one_copy_of_a_never_written_layer",
            builds_at_once_keep_one_copy_of_a_never_written_layer,
        ),
        (
            "a_layer_written_after_its_files_were_moved_hashes_as_recorded",
            a_layer_written_after_its_files_were_moved_hashes_as_recorded,
        ),
    ])
}

fn h(s: &str, empty: bool) -> (String, bool) {
    (s.to_string(), empty)
}

fn config_instructions_and_history() {
    let fx = Fixture::new();
    let built = fx.build_ok(
        "FROM busybox\n\
         MAINTAINER someone\n\
         ARG VERSION=1.0\n\
         ENV APP=/app GREETING=\"hello world\"\n\
         ENV DIR=$APP/data\n\
         LABEL version=$VERSION \"com.example.name\"=demo\n\
         EXPOSE 80 53/udp 8000-8001\n\
         VOLUME /data /logs\n\
         USER app\n\
         CMD [\"serve\", \"--port\", \"80\"]\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         HEALTHCHECK --interval=5m --timeout=3s CMD wget -q localhost || exit 1\n\
         STOPSIGNAL SIGTERM\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         ONBUILD RUN echo child\n",
    );
    let c = &built.config.config;
    assert_eq!(built.config.author, "someone");
    assert!(c.env.contains(&"APP=/app".to_string()), "{:?}", c.env);
    assert!(
        c.env.contains(&"GREETING=hello world".to_string()),
        "{:?}",
        c.env
    );
    assert!(c.env.contains(&"DIR=/app/data".to_string()), "{:?}", c.env);
    assert!(
        !c.env.iter().any(|e| e.starts_with("VERSION=")),
        "ARG values are not persisted: {:?}",
        c.env
    );
    assert_eq!(c.labels.get("version").map(String::as_str), Some("1.0"));
    assert_eq!(
        c.labels.get("com.example.name").map(String::as_str),
        Some("demo")
    );
    let ports: Vec<&String> = c.exposed_ports.keys().collect();
    assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    assert_eq!(c.volumes.keys().collect::<Vec<_>>(), ["/data", "/logs"]);
    assert_eq!(c.user, "app");
    assert_eq!(
        c.entrypoint,
        Some(vec!["/bin/sh".to_string(), "-c".to_string()])
    );
    assert_eq!(
        c.cmd,
        Some(vec!["serve".to_string(), "--port".into(), "80".into()]),
        "CMD set in this stage survives ENTRYPOINT"
    );
    let hc = c.healthcheck.as_ref().expect("healthcheck");
    assert_eq!(
        hc.test,
        vec![
            "CMD-SHELL".to_string(),
            "wget -q localhost || exit 1".into()
        ]
    );
    assert_eq!((hc.interval, hc.timeout), (300_000_000_000, 3_000_000_000));
    assert_eq!(c.stop_signal, "SIGTERM");
    assert_eq!(c.shell, vec!["/bin/sh".to_string(), "-ec".into()]);
    assert_eq!(c.on_build, vec!["RUN echo child".to_string()]);
    assert_eq!(
        built.layers.len(),
        1,
        "config-only instructions add no layer"
    );
    assert_eq!(
        built.history(),
        vec![
            h("MAINTAINER someone", true),
            h("ARG VERSION=1.0", true),
            h("ENV APP=/app GREETING=hello world", true),
            h("ENV DIR=/app/data", true),
            h("LABEL version=1.0 com.example.name=demo", true),
            h("EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp]", true),
            h("VOLUME [/data /logs]", true),
            h("USER app", true),
            h(r#"CMD ["serve" "--port" "80"]"#, true),
            h(r#"ENTRYPOINT ["/bin/sh" "-c"]"#, true),
            h(
                "HEALTHCHECK {Test:[CMD-SHELL wget -q localhost || exit 1] Interval:5m0s \
                 Timeout:3s StartPeriod:0s StartInterval:0s Retries:0}",
                true
            ),
            h("STOPSIGNAL SIGTERM", true),
            h("SHELL [/bin/sh -ec]", true),
            // BuildKit records no history for ONBUILD (checked by tests/fidelity.rs).
        ]
    );
    assert!(built
        .config
        .history
        .iter()
        .all(|h| h.comment == "buildkit.dockerfile.v0"));

    // ENTRYPOINT without a CMD in the same stage resets the inherited CMD.
    let built = fx.build_ok("FROM busybox\nENTRYPOINT [\"echo\"]\n");
    assert_eq!(built.config.config.cmd, None, "busybox's CMD [sh] is reset");
}

fn run_env_user_workdir_and_build_args() {
    let fx = Fixture::new();
    let df = "FROM busybox\n\
              ARG FLAVOR=plain\n\
              ENV LEVEL=3\n\
              RUN echo \"$FLAVOR $LEVEL\" > /flavor && echo visible\n\
              WORKDIR /srv/sub\n\
              USER app\n\
              WORKDIR /home/app/made\n\
              RUN id -u > uid && pwd > cwd\n";
    let mut request = fx
        .request(df)
        .with_build_arg("FLAVOR", "spicy")
        .with_build_arg("UNUSED", "x");
    request.source_date_epoch = Some(1_700_000_000);
    let built = fx.built(&request);
    let root = fx.flatten(&built);
    let r = root.path();
    assert_eq!(
        std::fs::read_to_string(r.join("flavor")).unwrap(),
        "spicy 3\n"
    );
    assert!(r.join("srv/sub").is_dir(), "WORKDIR creates the directory");
    assert_eq!(std::fs::metadata(r.join("srv/sub")).unwrap().uid(), 0);
    let made = std::fs::metadata(r.join("home/app/made")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (1000, 1000),
        "WORKDIR after USER is owned by the user"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("home/app/made/uid")).unwrap(),
        "1000\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("home/app/made/cwd")).unwrap(),
        "/home/app/made\n"
    );
    assert_eq!(built.config.config.working_dir, "/home/app/made");
    assert!(
        !built
            .config
            .config
            .env
            .iter()
            .any(|e| e.starts_with("FLAVOR")),
        "ARG is not persisted"
    );
    assert!(
        built.events.output().contains(&"visible".to_string()),
        "RUN output is reported"
    );
    let warned = built
        .events
        .events
        .iter()
        .any(|e| matches!(e, Event::Warning { message } if message.contains("UNUSED")));
    assert!(warned, "unused build arg warns");
    assert_eq!(
        built.history(),
        vec![
            h("ARG FLAVOR=spicy", true),
            h("ENV LEVEL=3", true),
            h("RUN |1 FLAVOR=spicy /bin/sh -c echo \"$FLAVOR $LEVEL\" > /flavor && echo visible # buildkit", false),
            h("WORKDIR /srv/sub", false),
            h("USER app", true),
            h("WORKDIR /home/app/made", false),
            h("RUN |1 FLAVOR=spicy /bin/sh -c id -u > uid && pwd > cwd # buildkit", false),
        ]
    );
    assert_eq!(built.layers.len(), 5, "busybox + RUN + 2 WORKDIR + RUN");
    assert_eq!(built.config.rootfs.diff_ids.len(), 5);
    assert_eq!(
        built.config.created.as_deref(),
        Some("2023-11-14T22:13:20Z"),
        "SOURCE_DATE_EPOCH"
    );
    assert!(built
        .config
        .history
        .iter()
        .all(|h| h.created.as_deref() == Some("2023-11-14T22:13:20Z")));
    // The RUN layer holds only what the step wrote.
    let names: Vec<String> = fx
        .entries(&built.layers[1])
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["flavor"],
        "sandbox mount points do not leak into the layer"
    );
}

fn copy_semantics() {
    let fx = Fixture::new();
    fx.file("hello.txt", "hi\n", 0o640)
        .file("bin/tool.sh", "#!/bin/sh\n", 0o755)
        .file("dir/a.txt", "a", 0o644)
        .file("dir/nested/b.txt", "b", 0o600)
        .file("g/one.conf", "1", 0o644)
        .file("g/two.conf", "2", 0o644)
        .file("g/skip.txt", "x", 0o644);
    let mtime = std::fs::metadata(fx.context.join("hello.txt"))
        .unwrap()
        .mtime();
    let built = fx.build_ok(
        "FROM busybox\n\
         COPY hello.txt /hello.txt\n\
         COPY bin/tool.sh dir /opt/\n\
         COPY g/*.conf /etc/app/\n\
         COPY --chown=app:wheel --chmod=600 hello.txt /home/app/new/owned\n\
         COPY --chown=1234 dir/a.txt /numeric\n\
         WORKDIR /rel\n\
         COPY hello.txt .\n",
    );
    let root = fx.flatten(&built);
    let r = root.path();
    let hello = std::fs::metadata(r.join("hello.txt")).unwrap();
    assert_eq!(hello.mode() & 0o7777, 0o640, "mode preserved");
    assert_eq!(
        (hello.uid(), hello.gid()),
        (0, 0),
        "context files belong to root"
    );
    assert_eq!(hello.mtime(), mtime, "mtime preserved");
    assert_eq!(
        std::fs::metadata(r.join("opt/tool.sh")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(r.join("opt/a.txt")).unwrap(),
        "a",
        "a directory's contents are copied"
    );
    assert_eq!(
        std::fs::metadata(r.join("opt/nested/b.txt"))
            .unwrap()
            .mode()
            & 0o7777,
        0o600
    );
    assert!(!r.join("opt/dir").exists(), "not the directory itself");
    assert!(r.join("etc/app/one.conf").is_file() && r.join("etc/app/two.conf").is_file());
    assert!(
        !r.join("etc/app/skip.txt").exists(),
        "glob only matches *.conf"
    );
    let owned = std::fs::metadata(r.join("home/app/new/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1000, 10, 0o600),
        "--chown by name, --chmod"
    );
    let numeric = std::fs::metadata(r.join("numeric")).unwrap();
    assert_eq!(
        (numeric.uid(), numeric.gid()),
        (1234, 1234),
        "a uid without group gives the same gid"
    );
    assert!(
        r.join("rel/hello.txt").is_file(),
        "relative dest is under WORKDIR"
    );
    let history = built.history();
    assert_eq!(history[0], h("COPY hello.txt /hello.txt # buildkit", false));
    assert_eq!(
        history[1],
        h("COPY bin/tool.sh dir /opt/ # buildkit", false)
    );
    assert_eq!(history[2], h("COPY g/*.conf /etc/app/ # buildkit", false));

    // Two sources onto a destination that is no directory: BuildKit copies them one by
    // one onto it, so the last one is left (the legacy builder refused).
    let built = fx.build_ok("FROM busybox\nCOPY hello.txt bin/tool.sh /notadir\n");
    assert_eq!(built.read("notadir"), "#!/bin/sh\n");
}

fn multi_stage_copy_from_and_target() {
    let fx = Fixture::new();
    let df = "ARG BASE=busybox\n\
              FROM $BASE AS builder\n\
              RUN mkdir -p /out && echo built > /out/artifact && chown 1000:1000 /out/artifact\n\
              FROM busybox AS unused\n\
              RUN exit 1\n\
              FROM scratch AS final\n\
              COPY --from=builder /out/artifact /artifact\n\
              COPY --from=0 /bin/busybox /bin/busybox\n\
              FROM builder AS debug\n\
              RUN echo debug > /debug\n";
    let mut request = fx.request(df);
    request.target = Some("final".into());
    let built = fx.built(&request);
    let root = fx.flatten(&built);
    assert_eq!(
        std::fs::read_to_string(root.path().join("artifact")).unwrap(),
        "built\n"
    );
    let md = std::fs::metadata(root.path().join("artifact")).unwrap();
    assert_eq!(md.uid(), 1000, "COPY --from keeps the owner");
    assert!(
        root.path().join("bin/busybox").is_file(),
        "--from by stage index"
    );
    assert!(!root.path().join("debug").exists());
    assert_eq!(built.layers.len(), 2, "scratch + two COPY layers");
    assert_eq!(
        built.config.config.env,
        vec![format!("PATH={}", rbuild_sandbox::DEFAULT_PATH)],
        "scratch has PATH"
    );
    let started: Vec<String> = built
        .events
        .events
        .iter()
        .filter_map(|e| match e {
            Event::BuildStarted { stages } => Some(stages.clone()),
            _ => None,
        })
        .next()
        .unwrap();
    assert_eq!(
        started,
        vec!["builder", "final"],
        "the failing unused stage is not built"
    );

    // Without --target the last stage builds, FROM an earlier stage.
    let built = fx.built(&fx.request(df));
    let root = fx.flatten(&built);
    assert!(root.path().join("debug").is_file() && root.path().join("out/artifact").is_file());
}

fn dockerignore_exclusion_is_an_error() {
    let fx = Fixture::new();
    fx.file(".dockerignore", "secret.txt\nlogs\n!logs/keep.log\n", 0o644)
        .file("secret.txt", "s", 0o644)
        .file("ok.txt", "ok", 0o644)
        .file("logs/drop.log", "d", 0o644)
        .file("logs/keep.log", "k", 0o644);
    let err = fx.build_err("FROM busybox\nCOPY secret.txt /\n");
    assert!(
        err.contains("secret.txt") && err.contains(".dockerignore"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "names the line: {err}");
    let built = fx.build_ok("FROM busybox\nCOPY . /ctx/\n");
    let root = fx.flatten(&built);
    assert!(root.path().join("ctx/ok.txt").is_file());
    assert!(
        !root.path().join("ctx/secret.txt").exists(),
        "ignored file not copied"
    );
    assert!(!root.path().join("ctx/logs/drop.log").exists());
    assert!(
        root.path().join("ctx/logs/keep.log").is_file(),
        "! exception re-includes"
    );
}

fn sources_outside_the_context_are_errors() {
    let fx = Fixture::new();
    std::fs::write(fx.context.parent().unwrap().join("outside.txt"), "x").unwrap();
    std::os::unix::fs::symlink("../outside.txt", fx.context.join("link")).unwrap();
    let err = fx.build_err("FROM busybox\nCOPY ../outside.txt /\n");
    assert!(err.contains("outside the build context"), "{err}");
    // The symlink resolves inside the context (as in BuildKit), where there is no
    // outside.txt: nothing is read from outside.
    let err = fx.build_err("FROM busybox\nCOPY link /\n");
    assert!(
        err.contains("link") && err.contains("not found in the build context"),
        "{err}"
    );
    let err = fx.build_err("FROM busybox\nCOPY missing.txt /\n");
    assert!(
        err.contains("missing.txt") && err.contains("not found"),
        "{err}"
    );
    let err = fx.build_err("FROM busybox\nCOPY https://example.com/x /x\n");
    assert!(err.contains("source can't be a URL for COPY"), "{err}");
    assert!(
        fx.store.resolve("test:latest").is_err(),
        "nothing tagged after failures"
    );
}

fn failing_run_reports_command_code_and_output() {
    let fx = Fixture::new();
    let err =
        fx.build_err("FROM busybox\nRUN echo first line && echo about to fail >&2 && exit 3\n");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("RUN echo first line"), "{err}");
    assert!(err.contains("/bin/sh -c echo first line"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert!(err.contains("about to fail"), "last output shown: {err}");
    assert!(
        fx.store.resolve("test:latest").is_err(),
        "no tag on failure"
    );
    let leftovers: Vec<_> = std::fs::read_dir(fx.store.state_dir("build").unwrap())
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "build working directories are removed on error"
    );
    let err = fx.build_err("FROM busybox\nRUN --mount=type=ssh,required=true true\n");
    assert!(err.contains("no SSH key \"default\" forwarded"), "{err}");
    let err = fx.build_err("FROM busybox\nCOPY --frm=a x y\n");
    assert!(
        err.contains("Dockerfile:2") && err.contains("--frm"),
        "{err}"
    );
}

fn onbuild_is_stored_and_triggers_run_in_child() {
    let fx = Fixture::new();
    let parent = fx.build_ok("FROM busybox\nONBUILD RUN echo triggered > /triggered\n");
    assert_eq!(
        parent.config.config.on_build,
        vec!["RUN echo triggered > /triggered".to_string()]
    );
    fx.store
        .tag(
            "parent:latest",
            &fx.store.resolve("test:latest").unwrap().manifest,
        )
        .unwrap();
    let child = fx.build_ok("FROM parent\nRUN cat /triggered\n");
    assert!(
        child.config.config.on_build.is_empty(),
        "triggers are not inherited"
    );
    assert!(
        child.events.output().contains(&"triggered".to_string()),
        "trigger ran before the stage's RUN"
    );
    assert!(child
        .history()
        .iter()
        .any(|(c, _)| c == "RUN /bin/sh -c echo triggered > /triggered # buildkit"));
}

fn add_extracts_local_tar() {
    let fx = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("pkg")).unwrap();
    std::fs::write(src.path().join("pkg/data"), "payload").unwrap();
    let mut out = std::fs::File::create(fx.context.join("pkg.tar.gz")).unwrap();
    write_dir_layer(src.path(), &mut out, &WriteOptions::default()).unwrap();
    fx.file("plain.txt", "p", 0o644);
    let built = fx.build_ok("FROM busybox\nADD pkg.tar.gz /opt/\nADD plain.txt /plain\n");
    let root = fx.flatten(&built);
    assert_eq!(
        std::fs::read_to_string(root.path().join("opt/pkg/data")).unwrap(),
        "payload"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("plain")).unwrap(),
        "p"
    );
    assert_eq!(
        built.history()[0],
        h("ADD pkg.tar.gz /opt/ # buildkit", false)
    );
}

fn run_heredoc_and_exec_form() {
    let fx = Fixture::new();
    let built = fx.build_ok(
        "FROM busybox\n\
         RUN <<EOF\n\
         echo one > /one\n\
         echo two > /two\n\
         EOF\n\
         RUN [\"/bin/sh\", \"-c\", \"echo exec > /exec\"]\n\
         COPY <<EOF /inline.txt\n\
         inline $HOSTNAME\n\
         EOF\n\
         RUN <<EOF\n\
         #!/bin/sh\n\
         echo shebang > /shebang\n\
         EOF\n\
         WORKDIR /etc\n",
    );
    let root = fx.flatten(&built);
    assert_eq!(
        std::fs::read_to_string(root.path().join("one")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("two")).unwrap(),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("exec")).unwrap(),
        "exec\n"
    );
    assert!(std::fs::read_to_string(root.path().join("inline.txt"))
        .unwrap()
        .starts_with("inline"));
    let history = built.history();
    assert_eq!(
        history[0],
        h(
            "RUN /bin/sh -c echo one > /one\necho two > /two\n # buildkit",
            false
        )
    );
    assert_eq!(
        history[1],
        h("RUN /bin/sh -c echo exec > /exec # buildkit", false)
    );
    assert_eq!(history[2], h("COPY <<EOF /inline.txt # buildkit", false));
    assert_eq!(
        std::fs::read_to_string(root.path().join("shebang")).unwrap(),
        "shebang\n"
    );
    assert_eq!(
        history[3],
        h("RUN /bin/sh -c /dev/pipes/EOF # buildkit", false)
    );
    assert!(
        !root.path().join("dev/pipes").exists(),
        "the script mount is not in a layer"
    );
    // WORKDIR of an existing directory still makes a layer, the empty tar BuildKit's
    // differ produces (1024 zero bytes).
    assert_eq!(history[4], h("WORKDIR /etc", false));
    assert_eq!(
        built.config.rootfs.diff_ids.last().unwrap().to_string(),
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    );
}

fn secret_and_cache_mounts() {
    let fx = Fixture::new();
    let secret = fx.context.parent().unwrap().join("token");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let mut request = fx.request(
        "FROM busybox\n\
         RUN --mount=type=secret,id=token cat /run/secrets/token > /copied\n\
         RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /count\n\
         RUN --mount=type=tmpfs,target=/scratch touch /scratch/x\n",
    );
    request.secrets = BTreeMap::from([("token".to_string(), secret.clone())]);
    let built = fx.built(&request);
    let root = fx.flatten(&built);
    assert_eq!(
        std::fs::read_to_string(root.path().join("copied")).unwrap(),
        "s3cr3t"
    );
    assert!(
        !root.path().join("run/secrets/token").exists(),
        "the secret is not in a layer"
    );
    assert!(
        !root.path().join("run").exists(),
        "nor the mount point the sandbox made for it"
    );
    assert!(
        !root.path().join("cache").exists(),
        "cache mount point removed"
    );
    assert!(
        !root.path().join("scratch").exists(),
        "tmpfs mount point removed"
    );
    assert!(
        !root.path().join("cache/log").exists(),
        "cache content is not in a layer"
    );
    assert!(
        !root.path().join("scratch/x").exists(),
        "tmpfs content is not in a layer"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("count"))
            .unwrap()
            .trim(),
        "1"
    );
    // The step must run again to see its cache mount's content (not be a cache hit).
    request.no_cache = true;
    let built = fx.built(&request);
    let root = fx.flatten(&built);
    assert_eq!(
        std::fs::read_to_string(root.path().join("count"))
            .unwrap()
            .trim(),
        "2",
        "cache persists between builds"
    );
    request.secrets.clear();
    let err = fx
        .build(&request)
        .expect_err("missing secret file makes cat fail")
        .to_string();
    assert!(err.contains("exit code"), "{err}");
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if entry.file_type().is_file() {
            let data = std::fs::read(entry.path()).unwrap_or_default();
            if data.windows(needle.len()).any(|w| w == needle) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

/// `RUN --mount=type=secret,id=x,env=NAME` (BuildKit v0.32): the value is the step's
/// variable NAME (over an ENV of that name), with no file unless `target=` is given too; it
/// reaches no layer, no config, no history, no record of the store, no progress event and no
/// error. An optional secret that was not given is an empty variable; a required one fails.
fn secret_env_reaches_the_step_alone() {
    const VALUE: &str = "s3cr3t-env-value-7f3a";
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let fx = Fixture::new();
        let secret = fx.context.parent().unwrap().join("token");
        std::fs::write(&secret, VALUE).unwrap();
        let mut request = fx.request(
            "FROM busybox\n\
             ENV TOKEN=public\n\
             RUN --mount=type=secret,id=token,env=TOKEN sh -c 'echo ${#TOKEN}; \
             [ -e /run/secrets/token ] && echo file || echo nofile' > /as-env\n\
             RUN --mount=type=secret,id=token,env=TOKEN,target=/also cat /also | wc -c > /file-too \
             && echo ${#TOKEN} >> /file-too && [ ! -e /run/secrets/token ]\n\
             RUN --mount=type=secret,id=absent,env=OPT echo \"[${OPT-unset}]\" > /optional\n\
             RUN --mount=type=secret,source=token,env=BY_SOURCE echo ${#BY_SOURCE} > /by-source\n\
             RUN echo \"$TOKEN\" > /after\n",
        );
        request.secrets = BTreeMap::from([("token".to_string(), secret.clone())]);
        request.isolation = isolation;
        let built = fx.built(&request);
        let len = VALUE.len();
        assert_eq!(
            built.read("as-env"),
            format!("{len}\nnofile\n"),
            "{isolation}"
        );
        assert_eq!(
            built
                .read("file-too")
                .split_whitespace()
                .collect::<Vec<_>>(),
            [len.to_string(), len.to_string()],
            "{isolation}: the file and the variable"
        );
        assert_eq!(built.read("optional"), "[]\n", "{isolation}");
        assert_eq!(built.read("by-source"), format!("{len}\n"), "{isolation}");
        assert_eq!(
            built.read("after"),
            "public\n",
            "{isolation}: one step only"
        );
        assert!(
            built
                .config
                .config
                .env
                .contains(&"TOKEN=public".to_string()),
            "{isolation}: {:?}",
            built.config.config.env
        );
        assert!(
            !built.path("also").exists() && !built.path("run").exists(),
            "{isolation}: no mount point left"
        );
        // Nowhere: the files of the image, the store's records and blobs, the config and
        // history, the progress events.
        let leaks = files_containing(built.root.path(), VALUE.as_bytes());
        assert!(leaks.is_empty(), "{isolation}: in the image: {leaks:?}");
        let leaks = files_containing(fx.store.root(), VALUE.as_bytes());
        assert!(leaks.is_empty(), "{isolation}: in the store: {leaks:?}");
        let config = serde_json::to_string(&built.config).unwrap();
        assert!(!config.contains(VALUE), "{isolation}: in the config");
        let events = format!("{:?}", built.events.events);
        assert!(!events.contains(VALUE), "{isolation}: in the progress");

        // A failing step's error names the command, not the variable's value.
        let mut failing =
            fx.request("FROM busybox\nRUN --mount=type=secret,id=token,env=TOKEN false\n");
        failing.secrets = request.secrets.clone();
        failing.isolation = isolation;
        let err = fx.build(&failing).expect_err("false fails").to_string();
        assert!(err.contains("false") && !err.contains(VALUE), "{err}");

        let mut required =
            fx.request("FROM busybox\nRUN --mount=type=secret,id=absent,env=X,required true\n");
        required.isolation = isolation;
        let err = fx.build(&required).expect_err("required").to_string();
        assert!(
            err.contains("\"absent\"") && err.contains("required"),
            "{isolation}: {err}"
        );
    }
}

/// A cache mount's `source=` binds that path of the cache (BuildKit's `llb.SourcePath`),
/// resolved inside the cache: a link to `/etc` or `../` climbs reach the cache's own root,
/// never the host's, and a path the cache does not hold fails the step
/// (`testCacheMountSourceEscape`: "open /etc: no such file or directory").
fn cache_mount_source_stays_in_the_cache() {
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let fx = Fixture::new();
        let mut request = fx.request(
            "FROM busybox\n\
             RUN --mount=type=cache,id=src,target=/cache mkdir -p /cache/sub && \
                 echo inside > /cache/sub/f && ln -s /etc /cache/esc && ln -s ../../.. /cache/up\n\
             RUN --mount=type=cache,id=src,source=sub,target=/s cat /s/f > /seen && echo more > /s/g\n\
             RUN --mount=type=cache,id=src,source=up/sub,target=/u cat /u/f > /through-up\n\
             RUN --mount=type=cache,id=src,target=/cache cat /cache/sub/g > /persisted\n",
        );
        request.isolation = isolation;
        let built = fx.built(&request);
        assert_eq!(built.read("seen"), "inside\n", "{isolation}");
        assert_eq!(built.read("through-up"), "inside\n", "{isolation}");
        assert_eq!(
            built.read("persisted"),
            "more\n",
            "{isolation}: written through source="
        );
        for source in ["esc", "../../../../etc", "up/etc", "missing"] {
            let mut escape = fx.request(&format!(
                "FROM busybox\nRUN --mount=type=cache,id=src,source={source},target=/v cat /v/passwd > /leak\n"
            ));
            escape.isolation = isolation;
            let err = fx.build(&escape).map(|_| ()).expect_err(source).to_string();
            assert!(
                err.contains("no such file or directory") && err.contains("not in the cache"),
                "{isolation} {source}: {err}"
            );
        }
        let mut escape = fx.request(
            "FROM busybox\nRUN --mount=type=cache,id=src,source=../../../../etc,target=/v true\n",
        );
        escape.isolation = isolation;
        let err = fx
            .build(&escape)
            .map(|_| ())
            .expect_err("../etc")
            .to_string();
        assert!(
            err.contains("open /etc: no such file or directory"),
            "{err}"
        );
    }
}

fn unknown_target_and_stage_are_errors() {
    let fx = Fixture::new();
    let mut request = fx.request("FROM busybox AS a\nRUN true\n");
    request.target = Some("nope".into());
    let err = fx.build(&request).expect_err("unknown target").to_string();
    assert!(err.contains("nope"), "{err}");
    let err = fx.build_err("FROM busybox\nCOPY --from=nosuchimage /x /x\n");
    assert!(err.contains("nosuchimage"), "{err}");
    let err = fx.build_err("FROM nosuchbase\n");
    assert!(
        err.contains("nosuchbase") && err.contains("Dockerfile:1"),
        "{err}"
    );
    let _ = Path::new("");
}

/// The overlay snapshotter (userns) and the walk-and-compare one (chroot) must give the
/// same layer for the same step: the layer is what the step did, not how it was observed.
fn overlay_and_chroot_steps_make_the_same_layer() {
    let fx = Fixture::new();
    let df = "FROM busybox\n\
              RUN mkdir -p /srv/data && echo x > /srv/data/f && rm /bin/ls && chmod 700 /root\n";
    let mut diff_ids = Vec::new();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let mut request = fx.request(df);
        request.isolation = isolation;
        request.source_date_epoch = Some(1_000_000_000);
        // Both must run: the second would otherwise be served from the first's cache.
        request.no_cache = true;
        let built = fx.built(&request);
        let warnings: Vec<&Event> = built
            .events
            .events
            .iter()
            .filter(|e| matches!(e, Event::Warning { .. }))
            .collect();
        assert!(warnings.is_empty(), "{isolation}: {warnings:?}");
        let entries = fx.entries(built.layers.last().unwrap());
        let names: Vec<String> = entries
            .iter()
            .map(|e| e.path.to_string_lossy().trim_end_matches('/').to_string())
            .collect();
        assert!(
            names.contains(&"bin/.wh.ls".to_string()),
            "{isolation}: deletion recorded: {names:?}"
        );
        assert!(
            names.contains(&"srv/data/f".to_string()),
            "{isolation}: {names:?}"
        );
        assert!(
            names.contains(&"root".to_string()),
            "{isolation}: chmod recorded: {names:?}"
        );
        diff_ids.push(built.config.rootfs.diff_ids.last().unwrap().clone());
    }
    assert_eq!(
        diff_ids[0], diff_ids[1],
        "both snapshotters give the same layer"
    );
}

/// A file hard-linked in an earlier layer, written through one name: overlayfs (userns)
/// copies that name up and the layer holds it alone; a chroot step copies it up on demand
/// (the sandbox's copy-up supervisor), so both give the same layer. A group made within the
/// step stays one group, and a new link to a shared file is the only name recorded.
fn a_write_to_one_name_of_an_earlier_hard_link_copies_only_it_up() {
    let fx = Fixture::new();
    let df = "FROM busybox\n\
              RUN mkdir /g && for n in w c o t l u; do echo $n > /g/$n-1 && ln /g/$n-1 /g/$n-2; done\n\
              RUN echo more >> /g/w-1 && chmod 600 /g/c-1 && chown 5:5 /g/o-1 \
                  && truncate -s 1 /g/t-1 && ln /g/l-1 /g/l-3 && cat /g/u-1 \
                  && echo n > /g/new-1 && ln /g/new-1 /g/new-2 && chmod 600 /g/new-1\n";
    let mut diff_ids = Vec::new();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let mut request = fx.request(df);
        request.isolation = isolation;
        request.source_date_epoch = Some(1_000_000_000);
        request.no_cache = true;
        let built = fx.built(&request);
        let entries = fx.entries(built.layers.last().unwrap());
        let mut names: Vec<String> = entries
            .iter()
            .map(|e| e.path.to_string_lossy().trim_end_matches('/').to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["g", "g/c-1", "g/l-3", "g/new-1", "g/new-2", "g/o-1", "g/t-1", "g/w-1"],
            "{isolation}: only the names written (and those made) are in the layer"
        );
        let entry = |name: &str| entries.iter().find(|e| e.path.ends_with(name)).unwrap();
        assert_eq!(entry("g/c-1").mode, 0o600, "{isolation}");
        assert_eq!(
            (entry("g/o-1").uid, entry("g/o-1").gid),
            (5, 5),
            "{isolation}"
        );
        assert_eq!(entry("g/t-1").size, 1, "{isolation}");
        assert_eq!(entry("g/w-1").size, 7, "{isolation}");
        assert_eq!(
            entry("g/l-3").link_target,
            None,
            "{isolation}: a new link to a shared file is recorded alone, as a file"
        );
        assert!(
            entry("g/new-2").link_target.is_some() || entry("g/new-1").link_target.is_some(),
            "{isolation}: a group made within the step stays one group"
        );
        diff_ids.push(built.config.rootfs.diff_ids.last().unwrap().clone());
    }
    assert_eq!(diff_ids[0], diff_ids[1], "chroot gives overlay's layer");
}

/// Two stages that can only finish if they run at the same time: each leaves a mark in a
/// cache mount they share and waits (up to `WAIT` × 0.05 s) for the other's.
const MEETING_STAGES: &str = "ARG WAIT=600\n\
    FROM busybox AS one\n\
    ARG WAIT\n\
    RUN --mount=type=cache,id=meet,target=/meet sh -c 'touch /meet/one; n=0; \
        while [ ! -e /meet/two ]; do n=$((n+1)); \
        if [ $n -gt $WAIT ]; then echo one never met two; exit 1; fi; sleep 0.05; done; \
        echo one > /one'\n\
    FROM busybox AS two\n\
    ARG WAIT\n\
    RUN --mount=type=cache,id=meet,target=/meet sh -c 'touch /meet/two; n=0; \
        while [ ! -e /meet/one ]; do n=$((n+1)); \
        if [ $n -gt $WAIT ]; then echo two never met one; exit 1; fi; sleep 0.05; done; \
        echo two > /two'\n\
    FROM busybox\n\
    COPY --from=one /one /one\n\
    COPY --from=two /two /two\n";

fn independent_stages_run_at_the_same_time() {
    let fx = Fixture::new();
    let mut request = fx.request(MEETING_STAGES);
    request.max_parallel_stages = Some(2);
    let built = fx.built(&request);
    assert_eq!(built.read("one"), "one\n");
    assert_eq!(built.read("two"), "two\n");
    // Both RUN steps (step 3, after FROM and ARG) started before either finished, and the
    // progress saw it.
    let position =
        |want: &dyn Fn(&Event) -> bool| built.events.events.iter().position(want).expect("event");
    let started = |name: &'static str| {
        position(
            &move |e: &Event| matches!(e, Event::StepStarted { stage, step: 3, .. } if stage == name),
        )
    };
    let done = |name: &'static str| {
        position(
            &move |e: &Event| matches!(e, Event::StepDone { stage, step: 3, .. } if stage == name),
        )
    };
    assert!(started("one") < done("two") && started("two") < done("one"));

    // One stage at a time, the same Dockerfile cannot finish: the knob is honoured and the
    // meeting above was real.
    let fx = Fixture::new();
    let mut request = fx.request(MEETING_STAGES);
    request.max_parallel_stages = Some(1);
    request.build_args.insert("WAIT".into(), "10".into());
    let err = fx.build(&request).unwrap_err().to_string();
    assert!(err.contains("one never met two"), "{err}");
}

fn a_failing_stage_stops_the_stages_beside_it() {
    let fx = Fixture::new();
    // Stage two waits until stage one has started failing, then runs a little longer: by
    // the time its step ends, stage one has failed and its next step must not start.
    let df = "FROM busybox AS one\n\
              RUN --mount=type=cache,id=meet,target=/meet sh -c 'touch /meet/failing; exit 3'\n\
              FROM busybox AS two\n\
              RUN --mount=type=cache,id=meet,target=/meet sh -c 'n=0; \
                  while [ ! -e /meet/failing ] && [ $n -lt 600 ]; do n=$((n+1)); sleep 0.05; done; \
                  sleep 1'\n\
              RUN echo never > /never\n\
              FROM busybox\n\
              COPY --from=one /etc/passwd /a\n\
              COPY --from=two /etc/passwd /b\n";
    let mut request = fx.request(df);
    request.max_parallel_stages = Some(2);
    let (result, events) = match fx.build_with_events(&request) {
        (Err(e), events) => (e.to_string(), events),
        (Ok(_), _) => panic!("the build must fail"),
    };
    assert!(result.contains("exit code 3"), "{result}");
    assert!(
        !result.contains("another stage failed"),
        "the error is the failing stage's own: {result}"
    );
    let third_step_of_two = events
        .events
        .iter()
        .any(|e| matches!(e, Event::StepStarted { stage, step: 3, .. } if stage == "two"));
    assert!(!third_step_of_two, "stage two stopped before its next step");
}

fn cache_mount_sharing_between_stages_running_at_once() {
    let fx = Fixture::new();
    // Each stage marks the cache busy for a second; with sharing=locked they never see each
    // other's mark. With sharing=private the second gets a cache of its own, so its file is
    // its own too. (The stages run at once: see independent_stages_run_at_the_same_time.)
    let stage = |name: &str| {
        format!(
            "FROM busybox AS {name}\n\
             RUN --mount=type=cache,id=locked,target=/c,sharing=locked sh -c \
                 'if [ -e /c/busy ]; then echo {name} saw the other inside; exit 1; fi; \
                  touch /c/busy; sleep 1; rm /c/busy'\n\
             RUN --mount=type=cache,id=private,target=/p,sharing=private sh -c \
                 'echo {name} > /p/owner; sleep 1; cat /p/owner > /owner'\n"
        )
    };
    let df = format!(
        "{}{}FROM busybox\nCOPY --from=one /owner /one\nCOPY --from=two /owner /two\n",
        stage("one"),
        stage("two")
    );
    let mut request = fx.request(&df);
    request.max_parallel_stages = Some(2);
    let built = fx.built(&request);
    assert_eq!(built.read("one"), "one\n");
    assert_eq!(built.read("two"), "two\n");
}

/// The base is extracted once into `<store>/trees` and each build's stage rootfs is made of
/// links to it: steps that append to, delete and overwrite base files change the build's
/// image and never the shared tree, which the next build sees as it was.
fn builds_share_an_extracted_base_and_never_change_it() {
    let fx = Fixture::new();
    fx.file("group", "from the context\n", 0o644);
    let df = "FROM busybox\n\
              RUN stat -c %i /bin/busybox > /inode && echo appended >> /etc/passwd && \
                  rm /bin/ls && mkdir -p /srv && echo x > /srv/f\n\
              COPY group /etc/group\n\
              RUN cat /etc/passwd /etc/group > /seen\n";
    let mut request = fx.request(df);
    request.no_cache = true;
    request.isolation = Isolation::Userns;
    let trees = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(fx.store.root().join("trees"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    for round in 1..=2 {
        let built = fx.built(&request);
        let seen = built.read("seen");
        assert!(seen.contains("appended"), "round {round}: {seen}");
        assert!(seen.contains("from the context"), "round {round}: {seen}");
        assert!(!built.path("bin/ls").exists(), "round {round}");
        assert_eq!(built.read("srv/f"), "x\n", "round {round}");

        let found = trees();
        assert_eq!(
            found.len(),
            1,
            "round {round}: one tree for one base: {found:?}"
        );
        let tree = &found[0];
        let passwd = std::fs::read_to_string(tree.join("etc/passwd")).unwrap();
        assert!(!passwd.contains("appended"), "the tree changed: {passwd}");
        assert!(
            std::fs::read_to_string(tree.join("etc/group"))
                .unwrap()
                .starts_with("root:x:0:"),
            "the tree changed"
        );
        assert!(tree.join("bin/ls").exists(), "the tree lost /bin/ls");
        assert!(!tree.join("srv").exists(), "the tree gained /srv");
        // The step saw the tree's own busybox: a link, not a copy.
        let inode = std::fs::metadata(tree.join("bin/busybox")).unwrap().ino();
        assert_eq!(
            built.read("inode").trim(),
            inode.to_string(),
            "round {round}: the rootfs links the shared tree"
        );
    }
}

/// Builds on one store at the same time, each needing the base's tree before it exists: one
/// tree is kept, the others' copies are dropped, and every build sees the whole base.
fn builds_at_once_make_one_extracted_tree() {
    let fx = Fixture::new();
    let mut request = fx.request("FROM busybox\nRUN ls /bin/busybox /etc/passwd > /seen\n");
    request.no_cache = true;
    request.isolation = Isolation::Userns;
    std::thread::scope(|scope| {
        // `run`, not `built`: the builds race for the tag, which `built` checks.
        let builds: Vec<_> = (0..3).map(|_| scope.spawn(|| fx.run(&request))).collect();
        for build in builds {
            let (result, _) = build.join().expect("a build panicked");
            let manifest = fx.store.read_manifest(&result.manifest).unwrap();
            let seen = fx
                .entries(manifest.layers.last().unwrap())
                .into_iter()
                .find(|e| e.path.to_string_lossy() == "seen")
                .expect("the step's file is in its layer");
            assert_eq!(seen.size, "/bin/busybox\n/etc/passwd\n".len() as u64);
        }
    });
    let entries: Vec<String> = std::fs::read_dir(fx.store.root().join("trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let trees = entries.iter().filter(|n| !n.ends_with(".used")).count();
    assert_eq!(trees, 1, "{entries:?}");
    assert!(
        !entries.iter().any(|n| n.starts_with("tmp-")),
        "a losing copy was left: {entries:?}"
    );
}

/// A blob's name and the paths of the layer entries it holds (none if it is not a layer).
type BlobPaths = Vec<(String, Vec<String>)>;

/// The store's blobs, split into (compressed, plain) by their magic bytes.
fn blobs_by_compression(fx: &Fixture) -> (BlobPaths, BlobPaths) {
    let (mut compressed, mut plain) = (Vec::new(), Vec::new());
    let dir = fx.tmp.path().join("store/oci/blobs/sha256");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let paths = rbuild_layer::list_entries(&bytes[..])
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|e| e.path.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        match rbuild_layer::Compression::detect(&bytes[..bytes.len().min(4)]) {
            rbuild_layer::Compression::None => plain.push((name, paths)),
            _ => compressed.push((name, paths)),
        }
    }
    compressed.sort();
    plain.sort();
    (compressed, plain)
}

fn a_discarded_stage_is_never_compressed_and_a_rebuild_compresses_nothing() {
    let fx = Fixture::new();
    let df = "FROM busybox AS builder\n\
              RUN mkdir /out && i=0 && while [ $i -lt 3000 ]; do echo toolchain-line-$i; i=$((i+1)); done > /out/toolchain && echo small > /out/artifact\n\
              FROM busybox\n\
              COPY --from=builder /out/artifact /artifact\n\
              RUN echo final > /final\n";
    let (before, _) = blobs_by_compression(&fx);
    let built = fx.built(&fx.request(df));
    assert_eq!(
        std::fs::read_to_string(built.root.path().join("artifact")).unwrap(),
        "small\n"
    );
    let (compressed, plain) = blobs_by_compression(&fx);
    let holds_toolchain = |paths: &Vec<String>| paths.iter().any(|p| p == "out/toolchain");
    assert!(
        !compressed.iter().any(|(_, paths)| holds_toolchain(paths)),
        "the discarded builder stage's layer was compressed: {compressed:?}"
    );
    assert!(
        plain.iter().any(|(_, paths)| holds_toolchain(paths)),
        "the builder stage's layer is stored plain, for the cache"
    );
    // The image ships compressed layers, as a build compressing as it writes would: the
    // base's and the two of the final stage, each gzip and hashing to its diff id.
    assert_eq!(built.layers.len(), 3);
    for (layer, diff_id) in built.layers.iter().zip(&built.config.rootfs.diff_ids) {
        assert_eq!(
            layer.media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let blob = fx.store.read_blob(&layer.digest).unwrap();
        assert_eq!(
            rbuild_layer::Compression::detect(&blob[..4]),
            rbuild_layer::Compression::Gzip
        );
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut rbuild_layer::compression::decompressing_reader(&blob[..]).unwrap(),
            &mut tar,
        )
        .unwrap();
        assert_eq!(&rbuild_image::Digest::of(&tar), diff_id);
    }
    let new_compressed: Vec<_> = compressed.iter().filter(|b| !before.contains(b)).collect();
    assert_eq!(
        new_compressed.len(),
        2,
        "exactly the final stage's two layers were compressed: {new_compressed:?}"
    );

    // Built again from the cache: the same image, and nothing compressed again.
    let again = fx.built(&fx.request(df));
    assert_eq!(again.result.manifest, built.result.manifest);
    assert_eq!(again.events.ran().len(), 0, "every step is cached");
    let (compressed_again, _) = blobs_by_compression(&fx);
    assert_eq!(compressed_again, compressed, "a rebuild compressed a layer");
}

/// The store's layer blobs holding `path`, by name.
fn blobs_holding(fx: &Fixture, path: &str) -> Vec<String> {
    let (compressed, plain) = blobs_by_compression(fx);
    compressed
        .into_iter()
        .chain(plain)
        .filter(|(_, paths)| paths.iter().any(|p| p == path))
        .map(|(name, _)| name)
        .collect()
}

/// The kept trees of layers never written (`<store>/trees/kept-*`).
fn kept_layer_trees(fx: &Fixture) -> Vec<String> {
    let mut kept: Vec<String> = std::fs::read_dir(fx.tmp.path().join("store/trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kept-") && !n.ends_with(".used"))
        .collect();
    kept.sort();
    kept
}

/// Issue 18: a stage no image is made of writes no layer blob (not even plain): its steps'
/// layers are hashed and their files kept for the cache. A rebuild hits them without
/// writing them; a build whose image is that stage writes them then, from the kept files,
/// and gets the layers a build writing them as the steps ran gets.
fn a_discarded_stage_writes_no_layer_until_an_image_needs_it() {
    let fx = Fixture::new();
    // Two steps: the first's layer is written when the second's changes are merged over
    // its files (the final stage's COPY reads them); the second's stays unwritten.
    let df = "FROM busybox AS builder\n\
              RUN mkdir /out && echo v1 > /out/version\n\
              RUN i=0 && while [ $i -lt 3000 ]; do echo toolchain-line-$i; i=$((i+1)); done > /out/toolchain && echo small > /out/artifact && echo v2 > /out/version\n\
              FROM busybox\n\
              COPY --from=builder /out/artifact /artifact\n\
              RUN echo final > /final\n";
    let lazy = |fx: &Fixture, target: Option<&str>| {
        let mut request = fx.request(df);
        request.target_ships = false;
        request.defer_unshipped_layers = true;
        // Layer times clamped: the step run again gives the same layer.
        request.source_date_epoch = Some(1_700_000_000);
        request.isolation = Isolation::Userns;
        request.target = target.map(String::from);
        request
    };
    let built = fx.built(&lazy(&fx, None));
    assert_eq!(built.read("artifact"), "small\n");
    assert_eq!(
        blobs_holding(&fx, "out/toolchain"),
        Vec::<String>::new(),
        "the discarded stage's second layer was written"
    );
    assert_eq!(
        blobs_holding(&fx, "out/version").len(),
        1,
        "the first step's layer is written before the second's files replace its own"
    );
    assert_eq!(
        kept_layer_trees(&fx).len(),
        1,
        "the second layer's files are kept"
    );

    // Rebuilt from the cache: every step hits, the same image, nothing written.
    let again = fx.built(&lazy(&fx, None));
    assert_eq!(again.events.ran(), Vec::<(String, usize)>::new());
    assert_eq!(again.result.manifest, built.result.manifest);
    assert_eq!(blobs_holding(&fx, "out/toolchain"), Vec::<String>::new());

    // The builder stage as the image: both steps hit, the second's layer is written from
    // the kept files.
    let builder = fx.built(&lazy(&fx, Some("builder")));
    assert_eq!(builder.events.ran(), Vec::<(String, usize)>::new());
    assert_eq!(blobs_holding(&fx, "out/toolchain").len(), 1);
    assert_eq!(builder.read("out/version"), "v2\n");
    assert_eq!(
        builder.read("out/toolchain").lines().count(),
        3000,
        "the layer written late has the step's files"
    );
    // Run again, every layer written as it is made: the same layers, the same image.
    let mut eager = lazy(&fx, Some("builder"));
    eager.defer_unshipped_layers = false;
    eager.no_cache = true;
    let eager = fx.built(&eager);
    assert_eq!(eager.events.ran().len(), 2, "both steps ran again");
    assert_eq!(builder.layers, eager.layers);
    assert_eq!(builder.result.image_id, eager.result.image_id);

    // `rbuild prune` removes the kept files: the step whose layer was never written is a
    // miss again (and runs), the one whose layer was written still hits.
    let fx = Fixture::new();
    let first = fx.built(&lazy(&fx, None));
    assert_eq!(kept_layer_trees(&fx).len(), 1);
    let pruned = rbuild_executor::prune_build_state(&fx.store);
    assert!(matches!(pruned.trees, Ok(Some(n)) if n >= 1), "{pruned:?}");
    assert_eq!(kept_layer_trees(&fx), Vec::<String>::new());
    let after_prune = fx.built(&lazy(&fx, None));
    let ran: Vec<usize> = after_prune
        .events
        .ran()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(ran, vec![3], "only the builder's second RUN runs again");
    assert_eq!(after_prune.result.manifest, first.result.manifest);

    // A build exporting its cache (every record's layer read) writes the kept layers it
    // hits, though no image needs them.
    let fx = Fixture::new();
    fx.built(&lazy(&fx, None));
    assert_eq!(blobs_holding(&fx, "out/toolchain"), Vec::<String>::new());
    let mut exporting = lazy(&fx, None);
    exporting.defer_unshipped_layers = false;
    let exported = fx.built(&exporting);
    assert_eq!(exported.events.ran(), Vec::<(String, usize)>::new());
    assert_eq!(blobs_holding(&fx, "out/toolchain").len(), 1);
    for record in &exported.result.cache_records {
        assert!(
            fx.store.has_blob(&record.layer.digest),
            "{record:?} names no blob"
        );
    }
}

/// Three builds running the same discarded step at once (the same layer: clamped times)
/// each try to keep its files: one copy is kept, no half-made one is left, and later
/// builds hit it and write the layer from it.
fn builds_at_once_keep_one_copy_of_a_never_written_layer() {
    let fx = Fixture::new();
    let df = "FROM busybox AS builder\n\
              RUN mkdir /out && i=0 && while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done > /out/toolchain && echo small > /out/artifact\n\
              FROM busybox\n\
              COPY --from=builder /out/artifact /artifact\n";
    let request = |target: Option<&str>, no_cache: bool| {
        let mut request = fx.request(df);
        request.target_ships = false;
        request.defer_unshipped_layers = true;
        request.source_date_epoch = Some(1_700_000_000);
        request.isolation = Isolation::Userns;
        request.no_cache = no_cache;
        request.target = target.map(String::from);
        request
    };
    let racing = request(None, true);
    std::thread::scope(|scope| {
        // `run`, not `built`: the builds race for the tag, which `built` checks.
        let builds: Vec<_> = (0..3).map(|_| scope.spawn(|| fx.run(&racing))).collect();
        for build in builds {
            build.join().expect("a build panicked");
        }
    });
    assert_eq!(kept_layer_trees(&fx).len(), 1);
    let entries: Vec<String> = std::fs::read_dir(fx.store.root().join("trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries.iter().any(|n| n.starts_with("tmp-")),
        "a losing copy was left: {entries:?}"
    );
    assert_eq!(blobs_holding(&fx, "out/toolchain"), Vec::<String>::new());
    let again = fx.built(&request(None, false));
    assert_eq!(again.events.ran(), Vec::<(String, usize)>::new());
    let builder = fx.built(&request(Some("builder"), false));
    assert_eq!(builder.events.ran(), Vec::<(String, usize)>::new());
    assert_eq!(builder.read("out/toolchain").lines().count(), 2000);
    assert_eq!(blobs_holding(&fx, "out/toolchain").len(), 1);
}

/// A discarded stage's step adds a file to a directory of the base (its layer holds that
/// directory with the times the step left it), a later step runs, then a `COPY --from`
/// reads the stage: the first layer, written from the stage's root after its files were
/// moved there, hashes to the diff id recorded when it was hashed. Moving entries out of
/// the upper directory changes that directory's times: they are read before anything
/// moves (no `SOURCE_DATE_EPOCH`, which would clamp them and hide it; the step sleeps so
/// that its second differs from the base's, as the layer has whole seconds).
fn a_layer_written_after_its_files_were_moved_hashes_as_recorded() {
    let fx = Fixture::new();
    let df = "FROM busybox AS builder\n\
              RUN sleep 1 && echo added > /etc/added\n\
              RUN true\n\
              FROM busybox\n\
              COPY --from=builder /etc/added /added\n";
    let mut request = fx.request(df);
    request.target_ships = false;
    request.defer_unshipped_layers = true;
    request.isolation = Isolation::Userns;
    let built = fx.built(&request);
    assert_eq!(built.read("added"), "added\n");
    assert_eq!(
        blobs_holding(&fx, "etc/added").len(),
        1,
        "the first step's layer is written from the stage's root"
    );
}
