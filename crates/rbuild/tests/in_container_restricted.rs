//! The Kubernetes "restricted" pod, as `docker run --user 1000:1000 --cap-drop ALL
//! --security-opt no-new-privileges` with Docker's default seccomp profile, on a real private
//! dockerd, rbuild as the entrypoint: no user namespaces, no chroot, no capabilities. There,
//! `--isolation restricted` (and `auto`) lays a busybox stage out in the image's own `/`
//! and gives the image rbuild gives on the host as root; and where `/` lacks the in-place
//! marker, nothing is laid out. Runs as root (CI does); needs the Debian packages docker.io
//! and busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testutil::{require_root, Dockerd, Registry};

mod common;
use common::{copy_at_same_path, shared_libraries, RESTRICTED_POD};

#[path = "in_container_restricted/support.rs"]
mod support;
use support::*;

const IMAGE: &str = "rbuild-in-container-restricted:test";
const UNMARKED_IMAGE: &str = "rbuild-in-container-restricted:unmarked";
/// The same as [`IMAGE`] with the store owned by OpenShift's random uid: the store must be
/// its own (rbuild keeps it private, mode 0700), the rest is group 0's.
const OPENSHIFT_IMAGE: &str = "rbuild-in-container-restricted:openshift";

/// Where rbuild lives in the builder image: its binary and its store, under the one
/// directory that is never part of a stage.
const RBUILD_IN_IMAGE: &str = "/rbuild/bin/rbuild";
const STORE_IN_IMAGE: &str = "/rbuild/state";
/// The build context, in rbuild's directory too: outside it the builder image has empty
/// directories only (overlayfs cannot rename a directory of an image layer, so a stage's
/// RUN could not move the builder's own files aside).
const CTX_IN_IMAGE: &str = "/rbuild/ctx/app";

/// Every image-level thing a restricted step must get right: owners by `RUN chown` and
/// `COPY --chown`, a setuid bit, a hard link, files written and deleted in the base's
/// directories (whiteouts), a step's `id -u`; and a second stage (built beside the first,
/// their RUN steps taking turns in `/`) whose file keeps its recorded owner through
/// `COPY --from`.
const APP_DOCKERFILE: &str = r#"FROM base:1 AS side
RUN echo side > /tmp/side && chown 42:43 /tmp/side

FROM base:1
COPY --chown=7:8 data.txt /data/data.txt
RUN touch /etc/f && chown 123:456 /etc/f && chmod u+s /etc/f \
 && ln /etc/f /etc/f-link \
 && echo changed > /etc/group && rm /etc/passwd \
 && mkdir -p /tmp/made/deep && echo x > /tmp/made/deep/file && chown -R 5:6 /tmp/made
RUN rm -r /tmp/made/deep && id -u > /tmp/id && chown 9:9 /data/data.txt
ENV DONE=1
COPY --from=side /tmp/side /data/side
RUN --mount=type=bind,source=data.txt,target=/data/bound \
    --mount=type=cache,target=/var/cache/app --mount=type=tmpfs,target=/tmp/scratch \
    cat /data/bound > /tmp/from-bind && echo run >> /var/cache/app/runs \
 && touch /tmp/scratch/gone && cp /var/cache/app/runs /tmp/cache-seen
RUN <<EOT
#!/bin/sh
echo from a heredoc script > /tmp/heredoc
EOT
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cret && touch /tmp/secret-ok
"#;

/// Device nodes: on the host neither chroot nor user-namespace steps may make them (Landlock
/// and the namespace refuse), so this one is checked by its layer alone.
const DEVICES_DOCKERFILE: &str = r#"FROM base:1
RUN mknod /etc/null c 1 3 && mknod -m 600 /etc/loop0 b 7 0 && chown 0:6 /etc/loop0
"#;

/// A step making a top-level directory: `/` is the runtime's (root's, 0755, whatever the
/// image says), so the step's path is redirected into /rbuild/top (top-level redirection).
const MKDIR_TOP_DOCKERFILE: &str = "FROM base:1\nRUN mkdir /newdir\n";

/// Top-level entries the base and the builder image lack, made by a RUN and by WORKDIR,
/// used by the next RUN: compared with the host's build.
const TOP_LEVEL_DOCKERFILE: &str = "FROM base:1\n\
     RUN mkdir /newtop && echo x > /newtop/f && echo y > /y\n\
     WORKDIR /newtop2\n\
     RUN pwd > here && cat /newtop/f /y >> /newtop2/here && cd / && ls -d newtop newtop2 y\n";

/// Redirection gives no way past Landlock: `..` out of a redirected entry, and a symlink
/// to the store made in one, reach /rbuild as any path does, whose store is hidden (its
/// journal, written while a stage is in place, cannot be read; names stay listable).
const TOP_ESCAPE_DOCKERFILE: &str = "FROM base:1\n\
     RUN mkdir /newtop && ln -s /rbuild/state /newtop/store && \
     (cat /newtop/../../state/in-place-journal || cat /newtop/store/in-place-journal \
     || cat /rbuild/top/../state/in-place-journal) && echo reached the store\n";

/// Top-level names the base lacks that `/` has (the builder image's empty `/srv`, the
/// container's volume at `/out`) or not (`/app`, `/data`, `/workspace`) are all absent to
/// the stage's steps: `test ! -e`, `ls` and `cd` find nothing, a plain `mkdir` (and
/// `mkdir -m 777`) and WORKDIR make the stage's own, and the image is the host's. (And an
/// ADD of a tar archive keeps the archive's owners, which the in-place build records.)
const ABSENT_TOP_DOCKERFILE: &str = "FROM base:1\n\
     RUN mkdir /app && echo x > /app/f\n\
     RUN test ! -e /data && mkdir /data && test ! -e /srv && ! ls /srv && ! cd /srv \
     && mkdir /srv && echo s > /srv/s && mkdir -m 777 /out && echo o > /out/o\n\
     WORKDIR /workspace\n\
     RUN pwd > here && ls -d /app /data /out /srv /workspace >> here && cat /app/f /out/o >> here\n\
     ADD owned.tar /archive/\n";

/// A stage with a top-level directory the builder image lacks (made by WORKDIR): laid out
/// in /rbuild/top.
const WORKDIR_TOP_DOCKERFILE: &str = "FROM base:1\nWORKDIR /newtop\nRUN touch made\n";

/// Mount targets that would put content into rbuild's store: by name, and through a
/// symlink a step made (which Landlock does not stop: making a symlink reads nothing).
const ESCAPE_BY_NAME_DOCKERFILE: &str =
    "FROM base:1\nRUN --mount=type=tmpfs,target=/rbuild/state/blobs true\n";
/// A step reading the build context or a file on a volume of the container: neither is the
/// stage's. (Names stay listable: Landlock's `ReadDir` on `/` covers its whole tree.) The
/// volume's `/out` is not a name of the stage's, so `/out` is redirected (absent); reached
/// through `/rbuild/..`, Landlock refuses it.
const CONTEXT_DOCKERFILE: &str = "FROM base:1\nRUN cat /rbuild/ctx/app/data.txt\n";
const VOLUME_DOCKERFILE: &str =
    "FROM base:1\nRUN cat /out/byname.txt || cat /rbuild/top/../../out/byname.txt\n";
const ESCAPE_BY_LINK_DOCKERFILE: &str =
    "FROM base:1\nRUN mkdir /data && ln -s /rbuild/state /data/store\n\
     RUN --mount=type=tmpfs,target=/data/store/blobs true\n";

const EPOCH_ARG: &str = "SOURCE_DATE_EPOCH=1700000000";

#[test]
fn a_busybox_stage_builds_in_place_as_rbuild_builds_it_on_the_host() {
    require_root("starting dockerd for the restricted container");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_base(work.path(), &store);
    let daemon = Dockerd::start();
    // The store is copied into the image before the reference build: the restricted build
    // must run its steps, not find them in the cache.
    builder_image(&daemon, work.path(), &store, true, "1000:0", IMAGE);
    builder_image(
        &daemon,
        work.path(),
        &store,
        true,
        "1000770000:0",
        OPENSHIFT_IMAGE,
    );

    // The reference: the same Dockerfile built on the host as root. Chroot isolation, since
    // a user namespace cannot make the device node (its `mknod c 1 3` fails with EPERM).
    let app = work.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Dockerfile"), APP_DOCKERFILE).unwrap();
    std::fs::write(app.join("data.txt"), "data\n").unwrap();
    let reference = work.path().join("reference.tar");
    let dest = format!("type=oci,dest={}", reference.display());
    let secret_file = work.path().join("secret.txt");
    std::fs::write(&secret_file, "s3cret").unwrap();
    let secret = format!("id=tok,src={}", secret_file.display());
    let started = std::time::Instant::now();
    let host = rbuild_ok(&[
        "--root",
        store.to_str().unwrap(),
        "build",
        "--isolation",
        "chroot",
        "--build-arg",
        EPOCH_ARG,
        "--secret",
        &secret,
        "-t",
        "app:ref",
        "-o",
        &dest,
        app.to_str().unwrap(),
    ]);

    println!(
        "host, chroot: {:.2} s; {}",
        started.elapsed().as_secs_f64(),
        phases_line(&host)
    );
    let runs = [
        ("1000:1000", "restricted", IMAGE),
        ("1000770000:0", "auto", OPENSHIFT_IMAGE),
    ];
    for (user, isolation, image) in runs {
        let out = out_dir();
        // `rbuild info` says what auto picks here.
        let info = run_rbuild(&daemon, image, user, out.path(), &["info", "--json"]);
        let info_json: serde_json::Value = serde_json::from_slice(&info.stdout)
            .unwrap_or_else(|e| panic!("info --json as {user}: {e}\n{}", describe(&info)));
        assert_eq!(info_json["userns"]["ok"], false, "{info_json:#}");
        assert_eq!(info_json["chroot"]["ok"], false, "{info_json:#}");
        assert_eq!(info_json["auto"], "restricted", "{info_json:#}");
        assert_eq!(
            info_json["restricted"]["in_place_root"]["ok"], true,
            "{info_json:#}"
        );

        let started = std::time::Instant::now();
        let run = run_rbuild(
            &daemon,
            image,
            user,
            out.path(),
            &restricted_build_args(isolation),
        );
        assert!(run.status.success(), "as {user}: {}", describe(&run));
        println!(
            "as {user}, {isolation}: {:.2} s with docker run; {}",
            started.elapsed().as_secs_f64(),
            phases_line(&run)
        );
        let built = out.path().join("app.tar");
        assert_owners_devices_and_whiteouts(&built);
        let diff = Command::new(rbuild())
            .arg("diff")
            .arg(&reference)
            .arg(&built)
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "as {user}, the image differs from the host's: {}",
            describe(&diff)
        );
        println!("as {user} ({isolation}): the same image as on the host");
    }

    // Mount targets in rbuild's store are refused, named or through a symlink; the store
    // still serves the next build (in the same container, after both).
    let out = out_dir();
    let script = format!(
        "for f in byname bylink context volume mapped cwd topescape; do {RBUILD_IN_IMAGE} --root {STORE_IN_IMAGE} build \
         --isolation restricted -f {CTX_IN_IMAGE}/Dockerfile.$f {CTX_IN_IMAGE} \
         > /out/$f.txt 2>&1; echo $f=$?; done; {RBUILD_IN_IMAGE} --root {STORE_IN_IMAGE} \
         build --isolation restricted -f {CTX_IN_IMAGE}/Dockerfile.devices {CTX_IN_IMAGE} \
         > /out/after.txt 2>&1; echo after=$?; touch {STORE_IN_IMAGE}/in-place-journal; \
         {RBUILD_IN_IMAGE} --root {STORE_IN_IMAGE} build --isolation restricted \
         {CTX_IN_IMAGE} > /out/journal.txt 2>&1; echo journal=$?"
    );
    let volume = format!("{}:/out", out.path().display());
    let mut docker = vec!["run", "--rm", "--network", "none", "-v", &volume];
    docker.extend_from_slice(&["--user", "1000:1000"]);
    docker.extend_from_slice(RESTRICTED_POD);
    docker.extend_from_slice(&["--entrypoint", "/rbuild/sh", IMAGE, "-c", &script]);
    let run = daemon.docker(&docker);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap_or_default();
    assert!(
        [
            "byname=1",
            "bylink=1",
            "context=1",
            "volume=1",
            "mapped=1",
            "cwd=1",
            "topescape=1",
            "after=0",
            "journal=1"
        ]
        .iter()
        .all(|want| stdout.contains(want)),
        "{}\nbyname:\n{}\nbylink:\n{}\ncontext:\n{}\nvolume:\n{}\nafter:\n{}",
        describe(&run),
        read("byname.txt"),
        read("bylink.txt"),
        read("context.txt"),
        read("volume.txt"),
        read("after.txt")
    );
    let volume = read("volume.txt");
    assert!(
        volume.contains("'/out/byname.txt': No such file"),
        "the volume's /out is not the stage's: {volume}"
    );
    for (name, path) in [
        ("context.txt", "data.txt"),
        ("volume.txt", "/rbuild/top/../../out/byname.txt"),
        ("mapped.txt", "libc.so"),
        ("topescape.txt", "state"),
    ] {
        let output = read(name);
        assert!(
            output.contains(path) && output.contains("Permission denied"),
            "{output}"
        );
    }
    // A build stopped while a stage was in `/` leaves the journal: later builds refuse.
    let journal = read("journal.txt");
    assert!(
        journal.contains("an earlier build was stopped while a stage was laid out"),
        "{journal}"
    );
    let cwd = read("cwd.txt");
    assert!(
        cwd.contains("the working directory /rbuild/w is (below) /rbuild"),
        "{cwd}"
    );
    let by_name = read("byname.txt");
    assert!(
        by_name.contains("--mount=type=tmpfs,target=/rbuild/state/blobs: its target")
            && by_name.contains("which is not the stage's"),
        "{by_name}"
    );
    let by_link = read("bylink.txt");
    assert!(
        by_link.contains("its target /data/store/blobs is (or leads to) /rbuild"),
        "{by_link}"
    );

    let out = out_dir();
    let args = [
        "--root",
        STORE_IN_IMAGE,
        "build",
        "--isolation",
        "restricted",
        "-f",
        "/rbuild/ctx/app/Dockerfile.devices",
        "-o",
        "type=oci,dest=/out/devices.tar",
        CTX_IN_IMAGE,
    ];
    let run = run_rbuild(&daemon, IMAGE, "1000:1000", out.path(), &args);
    assert!(run.status.success(), "{}", describe(&run));
    assert_devices(&out.path().join("devices.tar"));

    // What cannot be laid out fails clearly, naming the limit.
    let file_args = |file: &'static str| {
        vec![
            "--root",
            STORE_IN_IMAGE,
            "build",
            "--isolation",
            "restricted",
            "-f",
            file,
            CTX_IN_IMAGE,
        ]
    };
    // Top-level entries neither the base nor the builder image has: laid out in
    // /rbuild/top, the steps' paths redirected there; the image is the host's.
    for file in [
        "/rbuild/ctx/app/Dockerfile.mkdir",
        "/rbuild/ctx/app/Dockerfile.workdir",
    ] {
        let run = run_rbuild(&daemon, IMAGE, "1000:1000", out.path(), &file_args(file));
        assert!(run.status.success(), "{file}: {}", describe(&run));
    }
    std::fs::write(app.join("Dockerfile.top"), TOP_LEVEL_DOCKERFILE).unwrap();
    let reference = work.path().join("reference-top.tar");
    let dest = format!("type=oci,dest={}", reference.display());
    rbuild_ok(&[
        "--root",
        store.to_str().unwrap(),
        "build",
        "--isolation",
        "chroot",
        "--build-arg",
        EPOCH_ARG,
        "-f",
        app.join("Dockerfile.top").to_str().unwrap(),
        "-o",
        &dest,
        app.to_str().unwrap(),
    ]);
    let run = run_rbuild(
        &daemon,
        IMAGE,
        "1000:1000",
        out.path(),
        &[
            "--root",
            STORE_IN_IMAGE,
            "build",
            "--isolation",
            "restricted",
            "--build-arg",
            EPOCH_ARG,
            "-f",
            "/rbuild/ctx/app/Dockerfile.top",
            "-o",
            "type=oci,dest=/out/top.tar",
            CTX_IN_IMAGE,
        ],
    );
    assert!(run.status.success(), "{}", describe(&run));
    let built = out.path().join("top.tar");
    let layers = layers_of(&built);
    let f = entry(&layers[1], "newtop/f");
    assert_eq!((f.uid, f.gid), (0, 0));
    entry(&layers[1], "y");
    entry(&layers[2], "newtop2/");
    entry(&layers[3], "newtop2/here");
    assert!(
        !layers[1..]
            .iter()
            .flatten()
            .any(|e| e.path.to_string_lossy().contains("rbuild")),
        "nothing of the redirection directory is in the layers"
    );
    let diff = Command::new(rbuild())
        .arg("diff")
        .arg(&reference)
        .arg(&built)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "top-level entries: the image differs from the host's: {}",
        describe(&diff)
    );
    // Top-level names the base lacks, whether `/` has them (the builder image's empty
    // /srv, the volume at /out) or not: absent to the steps, made by them as on the host,
    // as the pod's user and as OpenShift's.
    std::fs::write(app.join("Dockerfile.absent"), ABSENT_TOP_DOCKERFILE).unwrap();
    write_owned_tar(&app);
    let reference = work.path().join("reference-absent.tar");
    let dest = format!("type=oci,dest={}", reference.display());
    rbuild_ok(&[
        "--root",
        store.to_str().unwrap(),
        "build",
        "--isolation",
        "chroot",
        "--build-arg",
        EPOCH_ARG,
        "-f",
        app.join("Dockerfile.absent").to_str().unwrap(),
        "-o",
        &dest,
        app.to_str().unwrap(),
    ]);
    for (user, image) in [("1000:1000", IMAGE), ("1000770000:0", OPENSHIFT_IMAGE)] {
        let out = out_dir();
        let run = run_rbuild(
            &daemon,
            image,
            user,
            out.path(),
            &[
                "--root",
                STORE_IN_IMAGE,
                "build",
                "--isolation",
                "restricted",
                "--build-arg",
                EPOCH_ARG,
                "-f",
                "/rbuild/ctx/app/Dockerfile.absent",
                "-o",
                "type=oci,dest=/out/absent.tar",
                CTX_IN_IMAGE,
            ],
        );
        assert!(run.status.success(), "as {user}: {}", describe(&run));
        assert!(
            !out.path().join("o").exists(),
            "as {user}: the step's /out is the stage's, not the container's volume"
        );
        let built = out.path().join("absent.tar");
        let layers = layers_of(&built);
        let made = entry(&layers[2], "out/");
        assert_eq!((made.mode, made.uid, made.gid), (0o777, 0, 0), "as {user}");
        entry(&layers[2], "srv/s");
        let owned = entry(layers.last().unwrap(), "archive/dir/f");
        assert_eq!(
            (owned.uid, owned.gid),
            (1234, 5678),
            "as {user}: the archive's owner"
        );
        let diff = Command::new(rbuild())
            .arg("diff")
            .arg(&reference)
            .arg(&built)
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "as {user}, names of / the stage lacks: the image differs from the host's: {}",
            describe(&diff)
        );
    }
}

#[test]
fn without_the_marker_nothing_is_laid_out() {
    require_root("starting dockerd for the restricted container");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_base(work.path(), &store);
    let daemon = Dockerd::start();
    builder_image(
        &daemon,
        work.path(),
        &store,
        false,
        "1000:0",
        UNMARKED_IMAGE,
    );
    let out = out_dir();

    // Asked for by name: refused before anything is pulled or laid out, naming the marker.
    let run = run_rbuild(
        &daemon,
        UNMARKED_IMAGE,
        "1000:1000",
        out.path(),
        &restricted_build_args("restricted"),
    );
    assert!(!run.status.success(), "{}", describe(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("refuses to use `/`") && stderr.contains("/rbuild/in-place-root"),
        "{stderr}"
    );
    assert!(!out.path().join("app.tar").exists());
    // `auto` does not pick it there either.
    let info = run_rbuild(
        &daemon,
        UNMARKED_IMAGE,
        "1000:1000",
        out.path(),
        &["info", "--json"],
    );
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["restricted"]["in_place_root"]["ok"], false, "{info:#}");
    assert!(
        info["auto"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no isolation available")),
        "{info:#}"
    );
    let run = run_rbuild(
        &daemon,
        UNMARKED_IMAGE,
        "1000:1000",
        out.path(),
        &restricted_build_args("auto"),
    );
    assert!(!run.status.success(), "{}", describe(&run));
    assert!(!out.path().join("app.tar").exists());

    // The same container's `/` afterwards: the builder's files are all there. (One
    // container: the refused build, then a listing, with a shell as the entrypoint.)
    let volume = format!("{}:/out", out.path().display());
    let mut docker = vec!["run", "--rm", "--network", "none", "-v", &volume];
    docker.extend_from_slice(&["--user", "1000:1000"]);
    docker.extend_from_slice(RESTRICTED_POD);
    let script = format!(
        "{RBUILD_IN_IMAGE} --root {STORE_IN_IMAGE} build --isolation restricted {CTX_IN_IMAGE} \
         > /out/refused.txt 2>&1; echo rc=$?; cat /canary; ls /bin/busybox {RBUILD_IN_IMAGE} \
         {CTX_IN_IMAGE}/Dockerfile"
    );
    docker.extend_from_slice(&["--entrypoint", "/bin/sh", UNMARKED_IMAGE, "-c", &script]);
    let run = daemon.docker(&docker);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success()
            && stdout.contains("rc=1")
            && stdout.contains("the builder's own file")
            && stdout.contains(&format!("{CTX_IN_IMAGE}/Dockerfile")),
        "{}",
        describe(&run)
    );
}

/// Push and the registry cache (`--cache-to`/`--cache-from type=registry`) from the pod:
/// one restricted container builds the compared Dockerfile, pushes the image and exports
/// every step's cache (`mode=max`) to a local registry; a second, fresh container (the
/// builder image's store: the base only) builds it from that cache without running a step,
/// and pushes the same image digest.
#[test]
fn push_and_the_registry_cache_work_from_the_pod() {
    require_root("starting dockerd for the restricted container");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_base(work.path(), &store);
    let daemon = Dockerd::start();
    builder_image(&daemon, work.path(), &store, true, "1000:0", IMAGE);
    let registry = Registry::start();
    let host = registry.host();
    let cache = format!("type=registry,ref={host}/team/app:cache");
    let export = format!("{cache},mode=max");
    let pod = |tag: &str, cache_args: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "host", "--user", "1000:1000"];
        args.extend_from_slice(RESTRICTED_POD);
        args.extend_from_slice(&[
            "--entrypoint",
            RBUILD_IN_IMAGE,
            IMAGE,
            "--root",
            STORE_IN_IMAGE,
            "build",
            "--isolation",
            "restricted",
            "--progress",
            "plain",
            "--build-arg",
            EPOCH_ARG,
            "--secret",
            "id=tok,src=/rbuild/ctx/secret.txt",
            "--push",
            "-t",
            tag,
        ]);
        args.extend_from_slice(cache_args);
        args.push(CTX_IN_IMAGE);
        let run = daemon.docker(&args);
        assert!(run.status.success(), "{tag}: {}", describe(&run));
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let first = pod(&format!("{host}/team/app:1"), &["--cache-to", &export]);
    assert_eq!(registry.manifest_status("team/app", "1"), Some(200));
    assert_eq!(
        registry.manifest_status("team/app", "cache"),
        Some(200),
        "no cache was exported: {first}"
    );
    let ran = first.lines().filter(|l| l.contains("] RUN ")).count();
    assert!(ran >= 6, "the first build runs its RUN steps: {first}");
    assert!(!first.contains("CACHED"), "{first}");

    let second = pod(&format!("{host}/team/app:2"), &["--cache-from", &cache]);
    let steps: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("] RUN ") || l.contains("] COPY "))
        .collect();
    for step in &steps {
        let number = step.split_whitespace().next().unwrap();
        assert!(
            second.contains(&format!("{number} CACHED")),
            "not from the registry cache: {step}\n{second}"
        );
    }
    assert!(steps.len() >= 8, "{second}");
    let digest = |log: &str| {
        log.lines()
            .filter_map(|l| l.split("digest: ").nth(1))
            .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
            .next_back()
    };
    assert!(digest(&first).is_some(), "no pushed digest shown: {first}");
    println!(
        "pushed {:?} from the first pod, {:?} from the cache",
        digest(&first),
        digest(&second)
    );
    assert_eq!(
        digest(&first),
        digest(&second),
        "the cached build pushed another image"
    );
}
