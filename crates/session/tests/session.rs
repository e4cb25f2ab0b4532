//! A build through the library [`Session`] with no CLI: one spec, two exporters (an OCI
//! archive and a local directory), both outputs checked. Needs root (CI runs it as root); the
//! binary is its own sandbox helper, so it has its own `main`.

use std::io::Read as _;
use std::process::ExitCode;

use rbuild_sandbox::test_support::{require_root, run_tests};
use rbuild_session::{
    exporters_for, BuildSpec, ContextSource, Note, OutputKind, OutputSpec, Reporter, Session,
    SessionError,
};
use rbuild_store::Store;

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    run_tests(&[
        (
            "oci_and_local_exports_of_one_build",
            oci_and_local_exports_of_one_build,
        ),
        (
            "a_push_without_a_tag_is_refused",
            a_push_without_a_tag_is_refused,
        ),
        (
            "an_oci_layout_named_context_is_read_and_verified",
            an_oci_layout_named_context_is_read_and_verified,
        ),
    ])
}

struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    runtime: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Fixture {
        require_root();
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path().join("store")).expect("open store");
        let context = tmp.path().join("context");
        std::fs::create_dir(&context).unwrap();
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY hello.txt /greeting/hello.txt\nLABEL made=by-session\n",
        )
        .unwrap();
        std::fs::write(context.join("hello.txt"), "hello from the session\n").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        Fixture {
            tmp,
            store,
            runtime,
        }
    }

    fn spec(&self) -> BuildSpec {
        BuildSpec::new(ContextSource::Dir(self.tmp.path().join("context")))
    }

    fn run(
        &self,
        spec: &BuildSpec,
    ) -> Result<(rbuild_session::SessionResult, Vec<Note>), SessionError> {
        let exporters = exporters_for(&spec.outputs)?;
        let session = Session::new(
            &self.store,
            rbuild_registry::Client::new(Default::default()),
            self.runtime.handle().clone(),
        );
        let mut notes = Vec::new();
        let result = session.run(
            spec,
            &exporters,
            Reporter {
                progress: &mut rbuild_executor::NoProgress,
                transfer: &rbuild_transfer::NoProgress,
                notes: &mut |n| notes.push(n),
            },
        )?;
        Ok((result, notes))
    }
}

fn oci_and_local_exports_of_one_build() {
    let fx = Fixture::new();
    let archive = fx.tmp.path().join("image.oci.tar");
    let local = fx.tmp.path().join("rootfs");
    let mut spec = fx.spec();
    spec.tags.push("session-test:1".into());
    spec.outputs = vec![
        OutputSpec::new(OutputKind::Oci, Some(archive.clone())).unwrap(),
        OutputSpec::new(OutputKind::Local, Some(local.clone())).unwrap(),
    ];
    let (result, notes) = fx.run(&spec).expect("the session builds and exports");
    assert!(notes.is_empty(), "no push, no cache, no warning: {notes:?}");
    assert_eq!(result.exports.len(), 2);
    // Nothing was pushed: the digest is the stored manifest's.
    assert_eq!(result.digest, result.build.manifest);

    // The local output is the image's file system.
    let copied = std::fs::read_to_string(local.join("greeting/hello.txt")).unwrap();
    assert_eq!(copied, "hello from the session\n");

    // The OCI archive is a layout whose blobs hold the built manifest and config.
    let mut names = Vec::new();
    let mut index = String::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == "index.json" {
            entry.read_to_string(&mut index).unwrap();
        }
        names.push(name);
    }
    assert!(names.contains(&"oci-layout".to_string()), "{names:?}");
    let manifest_hex = result.build.manifest.to_string().replace("sha256:", "");
    let config_hex = result.build.image_id.to_string().replace("sha256:", "");
    assert!(
        names.contains(&format!("blobs/sha256/{manifest_hex}")),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("blobs/sha256/{config_hex}")),
        "{names:?}"
    );
    assert!(index.contains(&manifest_hex), "{index}");

    // The store has the image under its tag, with the Dockerfile's label.
    let record = fx.store.resolve("session-test:1").unwrap();
    assert_eq!(record.manifest.digest, result.build.manifest);
    let config = fx.store.read_config(&record.config).unwrap();
    assert_eq!(
        config.config.labels.get("made").map(String::as_str),
        Some("by-session")
    );
}

fn a_push_without_a_tag_is_refused() {
    let fx = Fixture::new();
    let mut spec = fx.spec();
    spec.outputs = vec![OutputSpec::new(OutputKind::Registry, None).unwrap()];
    let err = fx.run(&spec).unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Export(rbuild_session::ExportError::NoTagToPush)
        ),
        "{err}"
    );
    // Refused before the build: nothing was stored.
    assert!(fx.store.list_images().unwrap().is_empty());
}

/// `--build-context base=oci-layout://DIR[@DIGEST]` (BuildKit's `testNamedOCILayoutContext`,
/// `testOnBuildNamedContext`): an image exported as an OCI layout by one store is the base
/// (its ONBUILD trigger runs) and a `COPY --from` source of a build in another store; a layout whose blob does not have its digest, or whose blob is
/// a symlink out of the layout, is refused naming the blob.
fn an_oci_layout_named_context_is_read_and_verified() {
    let made = Fixture::new();
    // With an ONBUILD trigger, which a build on the layout's image runs
    // (`testOnBuildNamedContext`).
    std::fs::write(
        made.tmp.path().join("context/Dockerfile"),
        "FROM scratch\nCOPY hello.txt /greeting/hello.txt\nLABEL made=by-session\n\
         ONBUILD COPY hello.txt /onbuild.txt\n",
    )
    .unwrap();
    let archive = made.tmp.path().join("image.oci.tar");
    let mut spec = made.spec();
    spec.outputs = vec![OutputSpec::new(OutputKind::Oci, Some(archive.clone())).unwrap()];
    let (result, _) = made.run(&spec).expect("the base builds");
    let layout = made.tmp.path().join("layout");
    tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .unpack(&layout)
        .unwrap();

    let fx = Fixture::new();
    let context = fx.tmp.path().join("context");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM base\nCOPY --from=base /greeting/hello.txt /copied.txt\n",
    )
    .unwrap();
    let manifest = result.build.manifest.clone();
    let by_digest = rbuild_session::OciLayoutRef {
        dir: layout.clone(),
        tag: None,
        digest: Some(manifest.clone()),
    };
    let only_image = rbuild_session::OciLayoutRef {
        digest: None,
        ..by_digest.clone()
    };
    for reference in [by_digest.clone(), only_image] {
        let local = fx.tmp.path().join("out");
        let _ = std::fs::remove_dir_all(&local);
        let mut spec = fx.spec();
        spec.named_contexts.insert(
            "base".into(),
            rbuild_session::NamedContext::OciLayout(reference.clone()),
        );
        spec.outputs = vec![OutputSpec::new(OutputKind::Local, Some(local.clone())).unwrap()];
        let (built, _) = fx.run(&spec).expect("the build on the layout's image");
        assert_eq!(
            std::fs::read_to_string(local.join("greeting/hello.txt")).unwrap(),
            "hello from the session\n",
            "{reference}"
        );
        assert_eq!(
            std::fs::read_to_string(local.join("copied.txt")).unwrap(),
            "hello from the session\n"
        );
        assert_eq!(
            std::fs::read_to_string(local.join("onbuild.txt")).unwrap(),
            "hello from the session\n",
            "the layout image's ONBUILD ran"
        );
        let config = fx.store.read_config(&built.build.image_id).unwrap();
        assert_eq!(
            config.config.labels.get("made").map(String::as_str),
            Some("by-session")
        );
    }
    // The layout's image is in the store by its manifest digest.
    assert_eq!(
        fx.store
            .resolve(&manifest.to_string())
            .unwrap()
            .manifest
            .digest,
        manifest
    );

    // A tampered layer (same size, other bytes) and a blob that is a symlink out of the
    // layout, in a fresh store each.
    let m = made.store.read_manifest(&manifest).unwrap();
    let blob_path = |d: &rbuild_image::Digest| layout.join("blobs/sha256").join(d.hex());
    let layer = blob_path(&m.layers[0].digest);
    let original = std::fs::read(&layer).unwrap();
    let mut tampered = original.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::remove_file(&layer).unwrap();
    std::fs::write(&layer, &tampered).unwrap();
    let refused = |what: &str| -> String {
        let fresh = Fixture::new();
        std::fs::write(fresh.tmp.path().join("context/Dockerfile"), "FROM base\n").unwrap();
        let mut spec = fresh.spec();
        spec.named_contexts.insert(
            "base".into(),
            rbuild_session::NamedContext::OciLayout(by_digest.clone()),
        );
        let err = fresh.run(&spec).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains(&m.layers[0].digest.to_string())
                || err.contains(&m.config.digest.to_string()),
            "{what}: {err}"
        );
        assert!(
            fresh.store.resolve(&manifest.to_string()).is_err(),
            "{what}"
        );
        err
    };
    let err = refused("tampered layer");
    assert!(err.to_lowercase().contains("digest"), "{err}");
    std::fs::remove_file(&layer).unwrap();
    std::fs::write(&layer, &original).unwrap();
    let config = blob_path(&m.config.digest);
    let outside = fx.tmp.path().join("outside-config.json");
    std::fs::copy(&config, &outside).unwrap();
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink(&outside, &config).unwrap();
    refused("config blob linked out of the layout");
}
