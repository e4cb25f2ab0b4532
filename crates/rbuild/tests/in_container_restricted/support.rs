//! Helpers of `in_container_restricted.rs`: the base and builder images, running rbuild in
//! a restricted container, reading an OCI archive's layers, and what the images must hold.

use super::*;
use rbuild_testutil::busybox_rootfs;

pub(crate) fn rbuild() -> &'static str {
    env!("CARGO_BIN_EXE_rbuild")
}

/// Runs rbuild on the host; panics with its output on failure.
pub(crate) fn rbuild_ok(args: &[&str]) -> Output {
    let out = Command::new(rbuild()).args(args).output().unwrap();
    assert!(out.status.success(), "rbuild {args:?}: {}", describe(&out));
    out
}

pub(crate) fn describe(run: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    )
}

/// The base: busybox with the applets the steps use, built by rbuild on the host into the
/// store `store`.
pub(crate) fn build_base(work: &Path, store: &Path) {
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

/// The builder image: for `marked`, `rbuild:restricted` from the repository's Dockerfile
/// (its `restricted` target, with this test's rbuild) plus a layer of what the test needs
/// (the dynamically linked rbuild's libraries, the store holding the base, owned by
/// `store_owner`, the build context, a shell at /rbuild/sh, a canary at `/canary`); else
/// the same files by hand without the marker, with a busybox shell to look around. Every
/// directory is owned by uid 1000 and group 0, group-writable (OpenShift's random uid has
/// gid 0; `/` itself stays root's in the container whatever the image says).
pub(crate) fn builder_image(
    daemon: &Dockerd,
    work: &Path,
    store: &Path,
    marked: bool,
    store_owner: &str,
    name: &str,
) {
    let root = work.join(name.replace([':', '/'], "-"));
    if marked {
        std::fs::create_dir_all(root.join("rbuild")).unwrap();
        // A shell outside the stages' directories, for the test's own scripts.
        std::fs::copy(rbuild_testutil::BUSYBOX, root.join("rbuild/sh")).unwrap();
    } else {
        busybox_rootfs(&root);
        let in_image = root.join(RBUILD_IN_IMAGE.trim_start_matches('/'));
        std::fs::create_dir_all(in_image.parent().unwrap()).unwrap();
        std::fs::copy(rbuild(), &in_image).unwrap();
        for dir in product_top_level() {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
    }
    for library in shared_libraries(rbuild()) {
        copy_at_same_path(&library, &root);
    }
    std::fs::write(root.join("canary"), "the builder's own file\n").unwrap();
    let app = root.join(CTX_IN_IMAGE.trim_start_matches('/'));
    write_contexts(&app);
    for (command, args) in [("chown", ["-R", "1000:0"]), ("chmod", ["-R", "g+rwX"])] {
        let status = Command::new(command)
            .args(args)
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
    }
    use std::os::unix::fs::PermissionsExt;
    // The context's files keep the host's modes: COPY copies them into the image.
    for file in ["Dockerfile", "Dockerfile.devices", "data.txt"] {
        // (The other Dockerfiles are only read.)
        std::fs::set_permissions(app.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let state = root.join(STORE_IN_IMAGE.trim_start_matches('/'));
    let status = Command::new("cp")
        .arg("-a")
        .arg(store)
        .arg(&state)
        .status()
        .unwrap();
    assert!(status.success());
    if !marked {
        let status = Command::new("chown")
            .args(["-R", store_owner])
            .arg(&state)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        daemon.import_rootfs(&root, name);
        return;
    }
    let product = product_image(work);
    let images = work.join("image-store");
    let dockerfile = work.join(format!("{}.Dockerfile", name.replace([':', '/'], "-")));
    std::fs::write(
        &dockerfile,
        format!(
            "FROM {product}\nCOPY --chown={store_owner} rbuild/state/ /rbuild/state/\n\
             COPY --chown=1000:0 --exclude=rbuild/state . /\n"
        ),
    )
    .unwrap();
    let archive = work.join(format!("{}.tar", name.replace([':', '/'], "-")));
    rbuild_ok(&[
        "--root",
        images.to_str().unwrap(),
        "build",
        // As root without a user namespace, files may get any owner (OpenShift's uid).
        "--isolation",
        "chroot",
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        name,
        "-o",
        &format!("type=docker,dest={}", archive.display()),
        root.to_str().unwrap(),
    ]);
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    // The product image's own configuration.
    let config = daemon.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}} {{.Config.User}}",
        name,
    ]);
    assert_eq!(
        config.trim(),
        r#"["/rbuild/bin/rbuild","--root","/rbuild/state"] 1000:0"#
    );
}

/// The top-level directories `cargo xtask builder-image` gives `rbuild:restricted` (its
/// list), and `/tmp`, which it makes 1777.
fn product_top_level() -> impl Iterator<Item = &'static str> {
    include_str!("../../../../xtask/restricted-top-level.txt")
        .split_whitespace()
        .chain(["tmp"])
}

/// `rbuild:restricted` built from the repository's Dockerfile with a context laid out as
/// `cargo xtask builder-image` lays it out (`lay_out_restricted`), this test's rbuild in
/// place of the static one; returns its name.
fn product_image(work: &Path) -> &'static str {
    const NAME: &str = "rbuild:restricted-test";
    let context = work.join("product");
    if context.exists() {
        return NAME;
    }
    use std::os::unix::fs::PermissionsExt;
    let restricted = context.join("restricted");
    let bin = restricted.join("rbuild/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(rbuild(), bin.join("rbuild")).unwrap();
    std::fs::write(restricted.join("rbuild/in-place-root"), "").unwrap();
    std::fs::create_dir_all(restricted.join("rbuild/certs")).unwrap();
    std::fs::create_dir_all(restricted.join("rbuild/top")).unwrap();
    std::fs::write(restricted.join("rbuild/certs/ca-certificates.crt"), "").unwrap();
    for dir in product_top_level() {
        std::fs::create_dir_all(restricted.join(dir)).unwrap();
        std::fs::set_permissions(restricted.join(dir), std::fs::Permissions::from_mode(0o775))
            .unwrap();
    }
    for dir in [
        &restricted,
        &restricted.join("rbuild"),
        &restricted.join("rbuild/top"),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o775)).unwrap();
    }
    std::fs::set_permissions(
        restricted.join("tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Dockerfile");
    let images = work.join("image-store");
    rbuild_ok(&[
        "--root",
        images.to_str().unwrap(),
        "build",
        "-f",
        dockerfile.to_str().unwrap(),
        "--target",
        "restricted",
        "-t",
        NAME,
        context.to_str().unwrap(),
    ]);
    NAME
}

/// The build context the tests build in the container, with every Dockerfile they use.
fn write_contexts(app: &Path) {
    std::fs::create_dir_all(app).unwrap();
    std::fs::write(app.join("Dockerfile"), APP_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.devices"), DEVICES_DOCKERFILE).unwrap();
    // Outside the context (a secret is never part of it).
    std::fs::write(app.parent().unwrap().join("secret.txt"), "s3cret").unwrap();
    std::fs::write(app.join("Dockerfile.mkdir"), MKDIR_TOP_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.absent"), ABSENT_TOP_DOCKERFILE).unwrap();
    write_owned_tar(app);
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
    // The base has no /lib: the step makes one, so that the next sees the builder's /lib
    // (where the library is) as the stage's.
    let top = library
        .iter()
        .nth(1)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mapped = format!(
        "FROM base:1\nRUN mkdir /{top}\nRUN echo x >> {}\n",
        library.display()
    );
    std::fs::write(app.join("Dockerfile.mapped"), mapped).unwrap();
    std::fs::write(
        app.join("Dockerfile.cwd"),
        "FROM base:1\nWORKDIR /rbuild/w\nRUN touch lost\n",
    )
    .unwrap();
    std::fs::write(app.join("Dockerfile.workdir"), WORKDIR_TOP_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.top"), TOP_LEVEL_DOCKERFILE).unwrap();
    std::fs::write(app.join("Dockerfile.topescape"), TOP_ESCAPE_DOCKERFILE).unwrap();
    std::fs::write(app.join("data.txt"), "data\n").unwrap();
}

/// `owned.tar` in `app`: an archive whose entries have owners (ADD unpacks it keeping them).
pub(crate) fn write_owned_tar(app: &Path) {
    let tree = app.join("owned-tree");
    std::fs::create_dir_all(tree.join("dir")).unwrap();
    std::fs::write(tree.join("dir/f"), "owned\n").unwrap();
    let status = Command::new("tar")
        .args([
            "--owner=1234",
            "--group=5678",
            "--numeric-owner",
            "--mtime=@1700000000",
        ])
        .arg("-cf")
        .arg(app.join("owned.tar"))
        .arg("-C")
        .arg(&tree)
        .arg("dir")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the owned tree");
    std::fs::remove_dir_all(&tree).unwrap();
}

/// `docker run` of `image` as `user` under [`RESTRICTED_POD`], rbuild as the entrypoint with
/// `args`, `out` as /out.
pub(crate) fn run_rbuild(
    daemon: &Dockerd,
    image: &str,
    user: &str,
    out: &Path,
    args: &[&str],
) -> Output {
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
    docker.extend_from_slice(RESTRICTED_POD);
    docker.extend_from_slice(&["--entrypoint", RBUILD_IN_IMAGE, image]);
    docker.extend_from_slice(args);
    daemon.docker(&docker)
}

pub(crate) fn out_dir() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    out
}

/// The build a restricted container runs.
pub(crate) fn restricted_build_args(isolation: &'static str) -> Vec<&'static str> {
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
pub(crate) fn phases_line(run: &Output) -> String {
    String::from_utf8_lossy(&run.stderr)
        .lines()
        .find(|l| l.contains("phases:"))
        .unwrap_or("no phases line")
        .trim()
        .to_string()
}

/// The layers of the image in the OCI archive `archive`, each as its entries.
pub(crate) fn layers_of(archive: &Path) -> Vec<Vec<rbuild_layer::EntryInfo>> {
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

pub(crate) fn entry<'a>(
    layer: &'a [rbuild_layer::EntryInfo],
    path: &str,
) -> &'a rbuild_layer::EntryInfo {
    layer
        .iter()
        .find(|e| e.path.to_str().unwrap().trim_start_matches("./") == path)
        .unwrap_or_else(|| {
            let names: Vec<_> = layer.iter().map(|e| e.path.display().to_string()).collect();
            panic!("no {path} in the layer: {names:?}")
        })
}

/// What the restricted build's image holds, read from its layers (not only compared).
pub(crate) fn assert_owners_devices_and_whiteouts(archive: &Path) {
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
pub(crate) fn assert_devices(archive: &Path) {
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
