//! What the executor's end-to-end tests share: a store holding a busybox base image, a
//! context directory, and a progress recorder.

#![allow(dead_code)] // each test binary uses its own part of this

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rbuild_executor::{build, BuildError, BuildRequest, BuildResult, Event, LocalImages, Progress};
use rbuild_image::{media_types, Descriptor, ImageConfig, Platform, RootFs};
use rbuild_layer::{
    apply_layer, list_entries, write_dir_layer, ApplyOptions, EntryInfo, WriteOptions,
};
use rbuild_sandbox::test_support::{busybox_rootfs, require_root};
use rbuild_store::Store;

/// A store holding `busybox:latest` (busybox + applets + passwd/group), and a context dir.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub store: Store,
    pub context: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        require_root();
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path().join("store")).expect("open store");
        let base = tmp.path().join("base");
        std::fs::create_dir(&base).unwrap();
        busybox_rootfs(&base);
        let mut writer = store.blob_writer().unwrap();
        let info = write_dir_layer(&base, &mut writer, &WriteOptions::default()).unwrap();
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
        config.config.env =
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()];
        config.config.cmd = Some(vec!["sh".into()]);
        let record = store
            .put_image(
                &config,
                &[Descriptor::new(
                    media_types::OCI_LAYER_GZIP,
                    blob.digest,
                    blob.size,
                )],
            )
            .unwrap();
        store.tag("busybox:latest", &record.manifest).unwrap();
        let context = tmp.path().join("context");
        std::fs::create_dir(&context).unwrap();
        Fixture {
            tmp,
            store,
            context,
        }
    }

    /// Writes a context file with `mode`.
    pub fn file(&self, rel: &str, content: &str, mode: u32) -> &Self {
        let path = self.context.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn request(&self, dockerfile: &str) -> BuildRequest {
        BuildRequest::new(&self.context, dockerfile).with_tag("test:latest")
    }

    pub fn build(&self, request: &BuildRequest) -> Result<(BuildResult, Recorder), BuildError> {
        let mut rec = Recorder::default();
        let result = build(request, &self.store, &LocalImages, &mut rec)?;
        Ok((result, rec))
    }

    /// Builds `request`: its outcome and the events, also of a build that failed.
    pub fn build_with_events(
        &self,
        request: &BuildRequest,
    ) -> (Result<BuildResult, BuildError>, Recorder) {
        let mut rec = Recorder::default();
        let result = build(request, &self.store, &LocalImages, &mut rec);
        (result, rec)
    }

    /// Builds `request`, which must succeed: the result and the events.
    pub fn run(&self, request: &BuildRequest) -> (BuildResult, Recorder) {
        match self.build(request) {
            Ok(r) => r,
            Err(e) => panic!("build failed:\n{e}"),
        }
    }

    /// Builds `request`, which must succeed, and reads back what it made.
    pub fn built(&self, request: &BuildRequest) -> Built {
        let (result, events) = self.run(request);
        let config = self.store.read_config(&result.image_id).unwrap();
        let record = self.store.resolve("test:latest").unwrap();
        assert_eq!(
            record.manifest.digest, result.manifest,
            "the tag points at the built manifest"
        );
        let manifest = self.store.read_manifest(&result.manifest).unwrap();
        let built = Built {
            config,
            layers: manifest.layers,
            events,
            result,
            root: tempfile::tempdir().unwrap(),
        };
        for layer in &built.layers {
            let blob = self.store.open_blob(&layer.digest).unwrap();
            apply_layer(blob, built.root.path(), &ApplyOptions::default()).unwrap();
        }
        built
    }

    pub fn build_ok(&self, dockerfile: &str) -> Built {
        self.built(&self.request(dockerfile))
    }

    /// Builds `dockerfile`, which must fail: the error's text.
    pub fn build_err(&self, dockerfile: &str) -> String {
        match self.build(&self.request(dockerfile)) {
            Ok(_) => panic!("build of\n{dockerfile}\nunexpectedly succeeded"),
            Err(e) => e.to_string(),
        }
    }

    /// All layers of `built` applied into a fresh directory.
    pub fn flatten(&self, built: &Built) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for layer in &built.layers {
            let blob = self.store.open_blob(&layer.digest).unwrap();
            apply_layer(blob, dir.path(), &ApplyOptions::default()).unwrap();
        }
        dir
    }

    /// The entries of one layer.
    pub fn entries(&self, layer: &Descriptor) -> Vec<EntryInfo> {
        list_entries(self.store.open_blob(&layer.digest).unwrap()).unwrap()
    }

    /// Paths (relative, no trailing `/`) in one layer.
    pub fn layer_paths(&self, layer: &Descriptor) -> Vec<String> {
        self.entries(layer)
            .into_iter()
            .map(|e| {
                e.path
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect()
    }
}

/// What a successful build made: config, layers, events, and its files (all layers
/// applied).
pub struct Built {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    pub events: Recorder,
    pub result: BuildResult,
    pub root: tempfile::TempDir,
}

impl Built {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn meta(&self, rel: &str) -> std::fs::Metadata {
        std::fs::symlink_metadata(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn mode(&self, rel: &str) -> u32 {
        use std::os::unix::fs::MetadataExt;
        self.meta(rel).mode() & 0o7777
    }

    pub fn created_by(&self) -> Vec<String> {
        self.config
            .history
            .iter()
            .map(|h| h.created_by.clone())
            .collect()
    }

    /// History entries as (created_by, empty_layer).
    pub fn history(&self) -> Vec<(String, bool)> {
        self.config
            .history
            .iter()
            .map(|h| (h.created_by.clone(), h.empty_layer))
            .collect()
    }
}

/// Records every event of a build.
#[derive(Debug, Default)]
pub struct Recorder {
    pub events: Vec<Event>,
}

impl Progress for Recorder {
    fn event(&mut self, event: &Event) {
        self.events.push(event.clone());
    }
}

impl Recorder {
    /// Lines RUN steps printed.
    pub fn output(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StepOutput { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// Steps served from the cache, as (stage, step).
    pub fn cached(&self) -> Vec<(String, usize)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StepCached { stage, step, .. } => Some((stage.clone(), *step)),
                _ => None,
            })
            .collect()
    }

    /// Steps that ran and made a layer, as (stage, step).
    pub fn ran(&self) -> Vec<(String, usize)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StepDone {
                    stage,
                    step,
                    layer_size: Some(_),
                    ..
                } => Some((stage.clone(), *step)),
                _ => None,
            })
            .collect()
    }

    /// Reasons given for cache misses.
    pub fn misses(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::CacheMiss { step, reason, .. } => Some(format!("#{step} {reason}")),
                _ => None,
            })
            .collect()
    }
}

/// A real HTTP server on 127.0.0.1 serving the files of a directory (`GET /name`), one
/// connection at a time, for as long as the test runs.
pub fn serve_dir(dir: PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("/");
            let name = path.trim_start_matches('/');
            let response = match std::fs::read(dir.join(name)) {
                Ok(body) if !name.contains("..") => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    port
}
