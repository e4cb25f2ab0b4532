//! Where Kaniko's integration Dockerfiles (`cargo xtask kaniko-corpus`) showed rbuild
//! building another image than BuildKit v0.32: each test names the corpus case and what
//! BuildKit v0.32.2 gave, measured with its buildctl (docs/fidelity.md, "Kaniko's
//! integration Dockerfiles"). Needs root; the binary is its own sandbox helper, so it has
//! its own `main`.

mod support;
use support::Fixture;

use std::process::ExitCode;

use rbuild_sandbox::test_support::run_tests;

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    run_tests(&[
        (
            "from_names_a_stage_only_as_written",
            from_names_a_stage_only_as_written,
        ),
        (
            "workdir_keeps_an_absolute_path_as_written",
            workdir_keeps_an_absolute_path_as_written,
        ),
        ("copy_copies_source_by_source", copy_copies_source_by_source),
        (
            "the_same_step_of_two_stages_runs_once",
            the_same_step_of_two_stages_runs_once,
        ),
        (
            "a_shared_step_gives_both_stages_the_same_files",
            a_shared_step_gives_both_stages_the_same_files,
        ),
        (
            "owners_beyond_65535_are_kept_as_buildkit_keeps_them",
            owners_beyond_65535_are_kept_as_buildkit_keeps_them,
        ),
        ("add_unpacks_a_bzip2_tar", add_unpacks_a_bzip2_tar),
    ])
}

/// `Dockerfile_test_issue_519`: `FROM base AS BUG_stage` then `FROM BUG_stage`. BuildKit
/// stores stage names lowercased and FROM looks its name up as written, so `BUG_stage` is
/// an image reference, and not a valid one ("repository name must be lowercase"); `COPY
/// --from` and `--target` look names up lowercased.
fn from_names_a_stage_only_as_written() {
    let fx = Fixture::new();
    let err = fx.build_err("FROM busybox AS BUG_stage\nRUN true\nFROM BUG_stage\nRUN true\n");
    // The test's resolver knows local images only; the registry's refuses the name.
    assert!(err.contains("base image \"BUG_stage\""), "{err}");
    let built = fx.build_ok(
        "FROM busybox AS Made\nRUN echo made > /made\n\
         FROM made AS child\nRUN cat /made > /child\n\
         FROM busybox\nCOPY --from=MADE /made /copied\nCOPY --from=Child /child /child\n",
    );
    assert_eq!(built.read("copied"), "made\n");
    assert_eq!(built.read("child"), "made\n");
}

/// `Dockerfile_test_workdir`: `WORKDIR $dir/$doesntexist` is `/another/new/dir/`. BuildKit's
/// `NormalizeWorkdir` keeps an absolute path as written and cleans only a relative one
/// joined to the current directory. Measured with BuildKit v0.32.2 (`FROM scratch`):
/// `WORKDIR /another/new/dir/`, `WORKDIR sub`, `WORKDIR /x/../y`, `WORKDIR //` give those
/// history entries (`WORKDIR /another/new/dir/sub` for the relative one), the WorkingDir
/// `//`, a directory `/y` and no `/x`, and an empty layer for `//`.
fn workdir_keeps_an_absolute_path_as_written() {
    let fx = Fixture::new();
    let built = fx.build_ok(
        "FROM busybox\nENV dir=/another/new/dir\n\
         WORKDIR $dir/$doesntexist\nRUN pwd > /first\n\
         WORKDIR sub\nRUN pwd > /second\n\
         WORKDIR /x/../y\nRUN pwd > /third\n\
         WORKDIR //\n",
    );
    let workdirs: Vec<String> = built
        .created_by()
        .into_iter()
        .filter(|c| c.starts_with("WORKDIR"))
        .collect();
    assert_eq!(
        workdirs,
        [
            "WORKDIR /another/new/dir/",
            "WORKDIR /another/new/dir/sub",
            "WORKDIR /x/../y",
            "WORKDIR //",
        ]
    );
    assert_eq!(built.config.config.working_dir, "//");
    assert_eq!(built.read("first"), "/another/new/dir\n");
    assert_eq!(built.read("second"), "/another/new/dir/sub\n");
    assert_eq!(built.read("third"), "/y\n");
    assert!(built.meta("y").is_dir());
    assert!(!built.path("x").exists());
    let last = built.layers.last().expect("a layer");
    assert!(
        fx.layer_paths(last).is_empty(),
        "{:?}",
        fx.layer_paths(last)
    );
}

/// `Dockerfile_test_copy`: `COPY context/bar/doesnotexist* context/foo hello`. BuildKit's
/// frontend has no "more than one source" check (the legacy builder's); its file op copies
/// each source, and each match of a wildcard, on its own: into the destination when it ends
/// with `/` or is a directory by then, else onto it. Measured with BuildKit v0.32.2 (`FROM
/// scratch`): `COPY foo bar /two` leaves `/two` holding bar's content; `COPY dir foo
/// /three` gives `/three/d` and `/three/foo`; `COPY nomatch* foo /hello` gives the file
/// `/hello`; `COPY foo dir /four` fails ("cannot copy to non-directory").
fn copy_copies_source_by_source() {
    let fx = Fixture::new();
    fx.file("foo", "foo\n", 0o644)
        .file("bar", "bar\n", 0o644)
        .file("dir/d", "d\n", 0o644);
    let built = fx.build_ok(
        "FROM busybox\nCOPY foo bar /two\nCOPY dir foo /three\nCOPY nomatch* foo /hello\n",
    );
    assert_eq!(built.read("two"), "bar\n");
    assert_eq!(built.read("three/d"), "d\n");
    assert_eq!(built.read("three/foo"), "foo\n");
    assert_eq!(built.read("hello"), "foo\n");
    assert_eq!(fx.layer_paths(&built.layers[1]), ["two"]);
    assert_eq!(fx.layer_paths(&built.layers[3]), ["hello"]);
    let err = fx.build_err("FROM busybox\nCOPY foo dir /four\n");
    assert!(err.contains("four"), "{err}");
}

/// `Dockerfile_test_arg_multi` (and its two siblings): two stages run the same step on the
/// same base. BuildKit merges identical vertices, so the step runs once and both images
/// share its layer; rbuild's stages run side by side, so the second waits for the first
/// and takes its layer (`CACHED (the same step of another stage)`), with and without
/// `--no-cache`. A step that writes random bytes shows it: both stages have the same ones.
fn the_same_step_of_two_stages_runs_once() {
    let fx = Fixture::new();
    let dockerfile = "FROM busybox AS one\n\
         RUN head -c 32 /dev/urandom | od -A n -x > /random\n\
         FROM busybox AS two\n\
         RUN head -c 32 /dev/urandom | od -A n -x > /random\n\
         FROM busybox\n\
         COPY --from=one /random /one\n\
         COPY --from=two /random /two\n";
    for no_cache in [false, true] {
        let mut request = fx.request(dockerfile);
        request.no_cache = no_cache;
        let built = fx.built(&request);
        assert_eq!(built.read("one"), built.read("two"), "no_cache {no_cache}");
        assert!(built.read("one").len() > 32, "{}", built.read("one"));
        let shared: Vec<String> = built
            .events
            .events
            .iter()
            .filter_map(|e| match e {
                rbuild_executor::Event::StepCached { stage, source, .. } if source == "build" => {
                    Some(stage.clone())
                }
                _ => None,
            })
            .collect();
        if no_cache {
            assert_eq!(
                shared.len(),
                1,
                "one stage takes the other's step: {shared:?}"
            );
        }
    }
}

/// `Dockerfile_test_arg_multi` itself: both stages `touch /myFile.txt` (one step, run once),
/// then the last stage copies the builder's file onto its own. In BuildKit both stages
/// have the very same file, so the COPY changes nothing and its layer is empty. In rbuild
/// one stage runs the step (nanosecond times) and the other applies its layer (whole
/// seconds), whichever comes first: the taking stage must get the running stage's times,
/// not the layer's, or the COPY records the file. With and without `--no-cache`, and with
/// the copy the other way round, so both orders of running are covered.
fn a_shared_step_gives_both_stages_the_same_files() {
    let fx = Fixture::new();
    let dockerfile = "FROM busybox AS builder\n\
         RUN touch /myFile.txt && mkdir -p /d && touch /d/f\n\
         FROM busybox AS other\n\
         RUN touch /myFile.txt && mkdir -p /d && touch /d/f\n\
         COPY --from=builder /myFile.txt /\n\
         COPY --from=builder /d /d\n\
         FROM builder\n\
         COPY --from=other /myFile.txt /\n";
    // Also with the layers of stages no image is made of left unwritten (issue 18).
    for (no_cache, defer) in [(false, false), (true, false), (false, true), (true, true)] {
        for target in ["other", ""] {
            let mut request = fx.request(dockerfile);
            request.no_cache = no_cache;
            request.defer_unshipped_layers = defer;
            if !target.is_empty() {
                request.target = Some(target.into());
            }
            let built = fx.built(&request);
            // `other` ends with its two COPYs, the last stage with its one.
            let copies = if target.is_empty() { 1 } else { 2 };
            for layer in &built.layers[built.layers.len() - copies..] {
                let paths = fx.layer_paths(layer);
                assert!(
                    paths.is_empty(),
                    "target {target:?} no_cache {no_cache} defer {defer}: a COPY of the \
                     shared step's files recorded {paths:?}"
                );
            }
            // The step ran once: the files came from one run.
            assert_eq!(built.read("myFile.txt"), "");
        }
    }
}

/// `Dockerfile_test_add`: `ADD context/tars/fil* /tars/` unpacks a tar whose entries belong
/// to `491327:89939`; BuildKit (rootful) keeps those owners. A root build's steps run in a
/// user namespace; with 65536 ids mapped such an owner had no host id and the build failed.
/// Now the tar's owner is kept in the layer, a step sees it, and a step may give a file to
/// an id in the millions, as in BuildKit.
fn owners_beyond_65535_are_kept_as_buildkit_keeps_them() {
    let fx = Fixture::new();
    fx.file("src/uncompressedFile", "uncompressed\n", 0o644);
    let made = std::process::Command::new("tar")
        .arg("-C")
        .arg(fx.context.join("src"))
        .args(["--owner=491327", "--group=89939", "--numeric-owner", "-cf"])
        .arg(fx.context.join("file.tar"))
        .arg("uncompressedFile")
        .status()
        .expect("running tar");
    assert!(made.success());
    let built = fx.build_ok(
        "FROM busybox\nADD fil* /tars/\n\
         RUN stat -c %u:%g /tars/uncompressedFile > /seen && \
         touch /high && chown 2000000:3000000 /high\n",
    );
    let n = built.layers.len();
    let owner = |layer: &rbuild_image::Descriptor, path: &str| {
        fx.entries(layer)
            .into_iter()
            .find(|e| e.path.to_string_lossy().trim_start_matches("./") == path)
            .map(|e| (e.uid, e.gid))
            .unwrap_or_else(|| panic!("{path} is not in the layer"))
    };
    assert_eq!(
        owner(&built.layers[n - 2], "tars/uncompressedFile"),
        (491_327, 89_939)
    );
    assert_eq!(built.read("tars/uncompressedFile"), "uncompressed\n");
    assert_eq!(built.read("seen"), "491327:89939\n");
    assert_eq!(owner(&built.layers[n - 1], "high"), (2_000_000, 3_000_000));
}

/// `Dockerfile_test_add` again: `file.bz2` is a bzip2-compressed tar, which BuildKit v0.32.2
/// unpacks (measured: `/tars/bzCompressedFile`, owned by the tar's `491327:89939`, and no
/// `/tars/file.bz2`); a bzip2 file that holds no tar is copied as it is.
fn add_unpacks_a_bzip2_tar() {
    use std::io::Write;
    let fx = Fixture::new();
    fx.file("src/bzCompressedFile", "bzip2\n", 0o644);
    let tar = fx.tmp.path().join("file.tar");
    let made = std::process::Command::new("tar")
        .arg("-C")
        .arg(fx.context.join("src"))
        .args(["--owner=491327", "--group=89939", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("bzCompressedFile")
        .status()
        .expect("running tar");
    assert!(made.success());
    let compress = |data: &[u8], name: &str| {
        let mut enc = bzip2::write::BzEncoder::new(
            std::fs::File::create(fx.context.join(name)).unwrap(),
            bzip2::Compression::default(),
        );
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
    };
    compress(&std::fs::read(&tar).unwrap(), "file.bz2");
    compress(b"not a tar\n", "text.bz2");
    let built = fx.build_ok("FROM busybox\nADD *.bz2 /tars/\n");
    assert_eq!(built.read("tars/bzCompressedFile"), "bzip2\n");
    assert!(!built.path("tars/file.bz2").exists());
    assert!(built.meta("tars/text.bz2").is_file());
    let entries = fx.entries(built.layers.last().expect("a layer"));
    let extracted = entries
        .iter()
        .find(|e| e.path.to_string_lossy().ends_with("tars/bzCompressedFile"))
        .expect("the extracted file is in the layer");
    assert_eq!((extracted.uid, extracted.gid), (491_327, 89_939));
}
