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
