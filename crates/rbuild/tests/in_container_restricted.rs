//! The Kubernetes "restricted" pod, as `docker run --user 1000:1000 --cap-drop ALL
//! --security-opt no-new-privileges` with Docker's default seccomp profile, on a real private
//! dockerd, rbuild as the entrypoint: no user namespaces, no chroot, no capabilities. There,
//! `--isolation restricted` (and `auto`) lays a busybox stage out in the image's own `/`
//! and gives the image rbuild gives on the host as root; and where `/` lacks the in-place
//! marker, nothing is laid out. Runs as root (CI does); needs the Debian packages docker.io
//! and busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testutil::{busybox_rootfs, require_root, Dockerd};

mod common;
use common::{copy_at_same_path, shared_libraries};

const IMAGE: &str = "rbuild-in-container-restricted:test";
const UNMARKED_IMAGE: &str = "rbuild-in-container-restricted:unmarked";
/// The same as [`IMAGE`] with the store owned by OpenShift's random uid: the store must be
/// its own (rbuild keeps it private, mode 0700), the rest is group 0's.
const OPENSHIFT_IMAGE: &str = "rbuild-in-container-restricted:openshift";

/// Docker's options for Kubernetes' restricted level (the seccomp profile is Docker's
/// default, which is what `RuntimeDefault` means under containerd); the exact
/// `securityContext` is in docs/ci/kubernetes-restricted.md.
const RESTRICTED: &[&str] = &["--cap-drop", "ALL", "--security-opt", "no-new-privileges"];

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
/// image says), so this fails, with a hint.
const MKDIR_TOP_DOCKERFILE: &str = "FROM base:1\nRUN mkdir /app\n";

/// A stage with a top-level directory the builder image lacks (made by WORKDIR): refused
/// when it would be laid out, naming the directory.
const WORKDIR_TOP_DOCKERFILE: &str = "FROM base:1\nWORKDIR /newtop\nRUN touch made\n";

/// Mount targets that would put content into rbuild's store: by name, and through a
/// symlink a step made (which Landlock does not stop: making a symlink reads nothing).
const ESCAPE_BY_NAME_DOCKERFILE: &str =
    "FROM base:1\nRUN --mount=type=tmpfs,target=/rbuild/state/blobs true\n";
/// A step reading the build context or a file on a volume of the container: neither is the
/// stage's. (Names stay listable: Landlock's `ReadDir` on `/` covers its whole tree.)
const CONTEXT_DOCKERFILE: &str = "FROM base:1\nRUN cat /rbuild/ctx/app/data.txt\n";
const VOLUME_DOCKERFILE: &str = "FROM base:1\nRUN cat /out/byname.txt\n";
const ESCAPE_BY_LINK_DOCKERFILE: &str = "FROM base:1\nRUN ln -s /rbuild/state /data/store\n\
     RUN --mount=type=tmpfs,target=/data/store/blobs true\n";

const EPOCH_ARG: &str = "SOURCE_DATE_EPOCH=1700000000";

fn rbuild() -> &'static str {
    env!("CARGO_BIN_EXE_rbuild")
}

/// Runs rbuild on the host; panics with its output on failure.
fn rbuild_ok(args: &[&str]) -> Output {
    let out = Command::new(rbuild()).args(args).output().unwrap();
    assert!(out.status.success(), "rbuild {args:?}: {}", describe(&out));
    out
}

fn describe(run: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    )
}

/// The base: busybox with the applets the steps use, built by rbuild on the host into the
/// store `store`.
fn build_base(work: &Path, store: &Path) {
    let ctx = work.join("base");
    let rootfs = ctx.join("rootfs");
    busybox_rootfs(&rootfs);
    for applet in ["chown", "chmod", "mknod", "ln"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
    let store = store.to_str().unwrap();
    rbuild_ok(&[
        "--root",
        store,
        "build",
        "-t",
        "base:1",
        ctx.to_str().unwrap(),
    ]);
}

/// The builder image: rbuild (with its libraries), the store holding the base, the build
/// context, everything owned by uid 1000 and group 0, group-writable (OpenShift's random uid
/// has gid 0; `/` itself stays root's in the container whatever the image says); with the
/// in-place marker when `marked` (else a busybox shell, to look around), and a canary at
/// `/canary`. The store belongs to `store_owner`.
fn builder_image(
    daemon: &Dockerd,
    work: &Path,
    store: &Path,
    marked: bool,
    store_owner: &str,
    name: &str,
) {
    let root = work.join(name.replace([':', '/'], "-"));
    if marked {
        // A shell outside the stages' directories, for the test's own scripts.
        std::fs::create_dir_all(root.join("rbuild")).unwrap();
        std::fs::copy(rbuild_testutil::BUSYBOX, root.join("rbuild/sh")).unwrap();
    } else {
        busybox_rootfs(&root);
    }
    let in_image = root.join(RBUILD_IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(in_image.parent().unwrap()).unwrap();
    std::fs::copy(rbuild(), &in_image).unwrap();
    for library in shared_libraries(rbuild()) {
        copy_at_same_path(&library, &root);
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(store)
        .arg(root.join(STORE_IN_IMAGE.trim_start_matches('/')))
        .status()
        .unwrap();
    assert!(status.success());
    if marked {
        std::fs::write(root.join("rbuild/in-place-root"), "").unwrap();
    }
    // `/` is the runtime's: the builder image has every top-level directory a stage has.
    for dir in [
        "bin", "etc", "tmp", "data", "home", "root", "usr", "var", "opt", "srv", "run",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("canary"), "the builder's own file\n").unwrap();
    let app = root.join(CTX_IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Dockerfile"), APP_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.devices"), DEVICES_DOCKERFILE).unwrap();
    // Outside the context (a secret is never part of it).
    std::fs::write(app.parent().unwrap().join("secret.txt"), "s3cret").unwrap();
    std::fs::write(app.join("Dockerfile.mkdir"), MKDIR_TOP_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.byname"), ESCAPE_BY_NAME_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.bylink"), ESCAPE_BY_LINK_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.context"), CONTEXT_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.volume"), VOLUME_DOCKERFILE).unwrap();
    // rbuild's own libraries (mapped into it) are read-only to steps; a working directory
    // in rbuild's directory is refused.
    let library = shared_libraries(rbuild())
        .into_iter()
        .find(|l| l.to_string_lossy().contains("libc.so"))
        .expect("rbuild links libc");
    let mapped = format!("FROM base:1\nRUN echo x >> {}\n", library.display());
    std::fs::write(app.join("Dockerfile.mapped"), mapped).unwrap();
    std::fs::write(
        app.join("Dockerfile.cwd"),
        "FROM base:1\nWORKDIR /rbuild/w\nRUN touch lost\n",
    )
    .unwrap();
    std::fs::write(app.join("Dockerfile.workdir"), WORKDIR_TOP_DOCKERFILE).unwrap();
    std::fs::write(app.join("data.txt"), "data\n").unwrap();
    for (command, args) in [("chown", ["-R", "1000:0"]), ("chmod", ["-R", "g+rwX"])] {
        let status = Command::new(command)
            .args(args)
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let status = Command::new("chown")
        .args(["-R", store_owner])
        .arg(root.join(STORE_IN_IMAGE.trim_start_matches('/')))
        .status()
        .unwrap();
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The context's files keep the host's modes: COPY copies them into the image.
    for file in ["Dockerfile", "Dockerfile.devices", "data.txt"] {
        // (The other Dockerfiles are only read.)
        std::fs::set_permissions(app.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    daemon.import_rootfs(&root, name);
}

/// `docker run` of `image` as `user` under [`RESTRICTED`], rbuild as the entrypoint with
/// `args`, `out` as /out.
fn run_rbuild(daemon: &Dockerd, image: &str, user: &str, out: &Path, args: &[&str]) -> Output {
    let volume = format!("{}:/out", out.display());
    let mut docker = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &volume,
        "--user",
        user,
    ];
    docker.extend_from_slice(RESTRICTED);
    docker.extend_from_slice(&["--entrypoint", RBUILD_IN_IMAGE, image]);
    docker.extend_from_slice(args);
    daemon.docker(&docker)
}

fn out_dir() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    out
}

/// The build a restricted container runs.
fn restricted_build_args(isolation: &'static str) -> Vec<&'static str> {
    vec![
        "--root",
        STORE_IN_IMAGE,
        "build",
        "--isolation",
        isolation,
        "--build-arg",
        EPOCH_ARG,
        "--secret",
        "id=tok,src=/rbuild/ctx/secret.txt",
        "-t",
        "app:1",
        "-o",
        "type=oci,dest=/out/app.tar",
        CTX_IN_IMAGE,
    ]
}

/// The `phases:` line of a build's plain progress (where its time went).
fn phases_line(run: &Output) -> String {
    String::from_utf8_lossy(&run.stderr)
        .lines()
        .find(|l| l.contains("phases:"))
        .unwrap_or("no phases line")
        .trim()
        .to_string()
}

/// The layers of the image in the OCI archive `archive`, each as its entries.
fn layers_of(archive: &Path) -> Vec<Vec<rbuild_layer::EntryInfo>> {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let blob = |digest: &str| -> PathBuf {
        dir.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = json(dir.path().join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let file = std::fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
            rbuild_layer::list_entries(file).unwrap()
        })
        .collect()
}

fn entry<'a>(layer: &'a [rbuild_layer::EntryInfo], path: &str) -> &'a rbuild_layer::EntryInfo {
    layer
        .iter()
        .find(|e| e.path.to_str().unwrap().trim_start_matches("./") == path)
        .unwrap_or_else(|| {
            let names: Vec<_> = layer.iter().map(|e| e.path.display().to_string()).collect();
            panic!("no {path} in the layer: {names:?}")
        })
}

/// What the restricted build's image holds, read from its layers (not only compared).
fn assert_owners_devices_and_whiteouts(archive: &Path) {
    use rbuild_layer::EntryKind;
    let layers = layers_of(archive);
    assert_eq!(
        layers.len(),
        8,
        "base, COPY, two RUN, COPY --from and three RUN layers"
    );
    let secret = &layers[7];
    entry(secret, "tmp/secret-ok");
    assert!(
        secret
            .iter()
            .all(|e| !e.path.to_str().unwrap().contains("run/")),
        "the secret's target is not in the layer"
    );
    // The mounts' content is not in the layer; what the step made from it is.
    let mounts = &layers[5];
    entry(mounts, "tmp/from-bind");
    entry(mounts, "tmp/cache-seen");
    for e in mounts {
        let path = e.path.to_str().unwrap();
        assert!(
            !path.contains("data/bound") && !path.contains("var/") && !path.contains("scratch"),
            "{path} in the mounts' layer"
        );
    }
    entry(&layers[6], "tmp/heredoc");
    let side = entry(&layers[4], "data/side");
    assert_eq!(
        (side.uid, side.gid),
        (42, 43),
        "COPY --from keeps the recorded owner"
    );
    let copy = &layers[1];
    let data = entry(copy, "data/data.txt");
    assert_eq!((data.uid, data.gid), (7, 8), "COPY --chown=7:8");
    let run = &layers[2];
    let f = entry(run, "etc/f");
    assert_eq!((f.uid, f.gid), (123, 456), "RUN chown 123:456");
    assert_eq!(f.mode & 0o4000, 0o4000, "chmod u+s after the chown");
    assert_eq!(entry(run, "etc/f-link").kind, EntryKind::Hardlink);
    entry(run, "etc/.wh.passwd");
    let made = entry(run, "tmp/made/deep/file");
    assert_eq!((made.uid, made.gid), (5, 6), "chown -R");
    let group = entry(run, "etc/group");
    assert_eq!(
        (group.uid, group.gid),
        (0, 0),
        "the build user stands for root"
    );
    let second = &layers[3];
    entry(second, "tmp/made/.wh.deep");
    let data = entry(second, "data/data.txt");
    assert_eq!((data.uid, data.gid), (9, 9), "a chown of a COPY's file");
    // Nothing of the builder image nor of the runtime reached a layer; of /dev, /proc and
    // /sys only the empty mount points BuildKit's runc leaves in the first RUN's layer.
    for layer in &layers[1..] {
        for e in layer {
            let path = e.path.to_str().unwrap().trim_start_matches("./");
            let path = path.trim_end_matches('/');
            for foreign in [
                "canary",
                "rbuild",
                "etc/hosts",
                "etc/resolv.conf",
                "out",
                "bin/busybox",
            ] {
                assert!(
                    path != foreign && !path.starts_with(&format!("{foreign}/")),
                    "{path} in a layer"
                );
            }
            for mount_point in ["dev", "proc", "sys"] {
                assert!(
                    !path.starts_with(&format!("{mount_point}/")),
                    "{path} in a layer"
                );
            }
        }
    }
    for mount_point in ["dev/", "proc/", "sys/"] {
        assert_eq!(entry(run, mount_point).kind, EntryKind::Dir);
    }
}

/// The device nodes of [`DEVICES_DOCKERFILE`]'s image.
fn assert_devices(archive: &Path) {
    use rbuild_layer::EntryKind;
    let layers = layers_of(archive);
    assert_eq!(layers.len(), 2, "base and the RUN layer");
    let null = entry(&layers[1], "etc/null");
    assert_eq!(null.kind, EntryKind::CharDevice);
    assert_eq!(null.device, Some((1, 3)));
    assert_eq!(null.mode, 0o644, "mknod's 0666 under umask 022");
    assert_eq!((null.uid, null.gid), (0, 0));
    let loop0 = entry(&layers[1], "etc/loop0");
    assert_eq!(loop0.kind, EntryKind::BlockDevice);
    assert_eq!(loop0.device, Some((7, 0)));
    assert_eq!(loop0.mode, 0o600);
    assert_eq!((loop0.uid, loop0.gid), (0, 6));
}

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
        "for f in byname bylink context volume mapped cwd; do {RBUILD_IN_IMAGE} --root {STORE_IN_IMAGE} build \
         --isolation restricted -f {CTX_IN_IMAGE}/Dockerfile.$f {CTX_IN_IMAGE} \
         > /out/$f.txt 2>&1; echo $f=$?; done; {RBUILD_IN_IMAGE} --root {STORE_IN_IMAGE} \
         build --isolation restricted -f {CTX_IN_IMAGE}/Dockerfile.devices {CTX_IN_IMAGE} \
         > /out/after.txt 2>&1; echo after=$?"
    );
    let volume = format!("{}:/out", out.path().display());
    let mut docker = vec!["run", "--rm", "--network", "none", "-v", &volume];
    docker.extend_from_slice(&["--user", "1000:1000"]);
    docker.extend_from_slice(RESTRICTED);
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
            "after=0"
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
    for (name, path) in [
        ("context.txt", "data.txt"),
        ("volume.txt", "/out/byname.txt"),
        ("mapped.txt", "libc.so"),
    ] {
        let output = read(name);
        assert!(
            output.contains(path) && output.contains("Permission denied"),
            "{output}"
        );
    }
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
    let run = run_rbuild(
        &daemon,
        IMAGE,
        "1000:1000",
        out.path(),
        &file_args("/rbuild/ctx/app/Dockerfile.mkdir"),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success()
            && stderr.contains("Permission denied")
            && stderr.contains("hint: this step ran with isolation `restricted`")
            && stderr.contains("directly in `/`"),
        "{}",
        describe(&run)
    );
    let run = run_rbuild(
        &daemon,
        IMAGE,
        "1000:1000",
        out.path(),
        &file_args("/rbuild/ctx/app/Dockerfile.workdir"),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success()
            && stderr.contains("Dockerfile.workdir:3")
            && stderr.contains("the stage has /newtop, which the builder image lacks"),
        "{}",
        describe(&run)
    );
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
    docker.extend_from_slice(RESTRICTED);
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
