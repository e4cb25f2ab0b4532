//! Hostile build inputs through the command line (docs/security.md): nothing outside the
//! context is read as build input, errors are printed once with control characters
//! escaped, and invalid `--chown` ids are refused.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::{fails, ok, rbuild};

const SECRET: &str = "s3cr3t-token-value";

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> std::process::Output {
    rbuild(root)
        .args(["build", "-q"])
        .args(extra)
        .arg(ctx)
        .env("RBUILD_TEST_SECRET", SECRET)
        .output()
        .unwrap()
}

#[test]
fn a_dockerfile_symlink_out_of_the_context_reads_nothing_from_the_host() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let host_file = outside.path().join("host-secret");
    std::fs::write(&host_file, format!("{SECRET}\n")).unwrap();
    for target in [
        Path::new("/proc/self/environ").to_path_buf(),
        host_file.clone(),
        Path::new("../../../../../../../../..").join(host_file.strip_prefix("/").unwrap()),
    ] {
        let ctx = tempfile::tempdir().unwrap();
        symlink(&target, ctx.path().join("Dockerfile")).unwrap();
        let stderr = fails(build(root.path(), ctx.path(), &[]));
        assert!(
            stderr.contains("unable to open the Dockerfile") && !stderr.contains(SECRET),
            "{target:?}: {stderr}"
        );
    }
}

#[test]
fn a_context_tarball_with_a_dockerfile_symlink_reads_nothing_from_the_host() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let host_file = outside.path().join("host-secret");
    std::fs::write(&host_file, format!("{SECRET}\n")).unwrap();
    let tar_path = outside.path().join("ctx.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    tar.append_link(&mut header, "Dockerfile", &host_file)
        .unwrap();
    tar.finish().unwrap();
    drop(tar);
    let stderr = fails(build(root.path(), &tar_path, &[]));
    assert!(
        stderr.contains("unable to open the Dockerfile") && !stderr.contains(SECRET),
        "{stderr}"
    );
}

#[test]
fn symlinks_inside_the_context_and_dash_f_outside_it_are_read() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir(ctx.path().join("sub")).unwrap();
    std::fs::write(
        ctx.path().join("sub/real.Dockerfile"),
        "FROM scratch\nLABEL from=inside\n",
    )
    .unwrap();
    // An absolute target resolves from the context root, as in BuildKit.
    symlink("/sub/real.Dockerfile", ctx.path().join("Dockerfile")).unwrap();
    ok(build(root.path(), ctx.path(), &["-t", "inside:1"]));
    // `-f` names the user's own file: read from where it is, even outside the context.
    let elsewhere = tempfile::tempdir().unwrap();
    let dockerfile = elsewhere.path().join("Dockerfile.outside");
    std::fs::write(&dockerfile, "FROM scratch\nLABEL from=outside\n").unwrap();
    ok(build(
        root.path(),
        ctx.path(),
        &["-t", "outside:1", "-f", dockerfile.to_str().unwrap()],
    ));
    let inspect = ok(rbuild(root.path())
        .args(["inspect", "inside:1", "outside:1"])
        .output()
        .unwrap());
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("\"inside\"") && text.contains("\"outside\""),
        "{text}"
    );
}

#[test]
fn a_parse_error_is_printed_once_with_control_characters_escaped() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nENV A=1\nCOPPY \x1b]0;owned\x07 \x1b[2J b\n",
    )
    .unwrap();
    let stderr = fails(build(root.path(), ctx.path(), &[]));
    assert_eq!(
        stderr.matches("unknown instruction: COPPY").count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\x07'),
        "raw control characters reached the terminal: {stderr:?}"
    );
    assert!(stderr.contains("\\x1b]0;owned\\x07 \\x1b[2J"), "{stderr}");
}

#[test]
fn an_out_of_range_chown_id_is_refused_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a"), "a").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY --chown=4294967295:4294967295 a /a\n",
    )
    .unwrap();
    let stderr = fails(build(root.path(), ctx.path(), &[]));
    assert!(
        stderr.contains("Dockerfile:2")
            && stderr.contains("user id 4294967295 is out of range (ids go from 0 to 4294967294)"),
        "{stderr}"
    );
}

/// A registry that answers every request with headers and then one byte every 200 ms.
fn slow_loris_registry() -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1000\r\n\r\n";
                if stream.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                while stream.write_all(b" ").is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
        }
    });
    host
}

#[test]
fn pull_from_a_slow_loris_registry_ends_at_the_registry_timeout() {
    let host = slow_loris_registry();
    let root = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let stderr = fails(
        rbuild(root.path())
            .args(["pull", "--registry-timeout", "1.5"])
            .arg(format!("{host}/evil/image:latest"))
            .output()
            .unwrap(),
    );
    let took = started.elapsed();
    assert!(
        stderr.contains("timed out") && stderr.contains("request timeout of 1.5s"),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    // The same from the environment, as CI would configure it.
    let stderr = fails(
        rbuild(root.path())
            .args(["pull"])
            .arg(format!("{host}/evil/image:latest"))
            .env("RBUILD_REGISTRY_TIMEOUT", "1")
            .output()
            .unwrap(),
    );
    assert!(stderr.contains("request timeout of 1s"), "{stderr}");
    let stderr = fails(
        rbuild(root.path())
            .args(["pull", "--registry-timeout", "0"])
            .arg(format!("{host}/evil/image:latest"))
            .output()
            .unwrap(),
    );
    assert!(stderr.contains("a timeout must be over 0"), "{stderr}");
}

/// What a RUN step prints reaches plain progress with its control characters escaped (as
/// `docker build --progress plain` shows them), so a step cannot clear or retitle the
/// terminal of whoever reads the log.
#[test]
fn run_output_in_plain_progress_has_control_characters_escaped() {
    let root = common::store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN printf 'before\\033[2J\\033]0;title\\007after\\n'\n",
    )
    .unwrap();
    let out = ok(rbuild(root.path())
        .args(["build", "--progress", "plain", "--no-cache"])
        .arg(ctx.path())
        .output()
        .unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("before\\x1b[2J\\x1b]0;title\\x07after"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\x07'),
        "raw control characters in the progress: {stderr:?}"
    );
}

/// COPY sources resolve symlinks inside the context, as BuildKit does: a link to a host
/// file copies nothing from the host, a link with an absolute target inside the context
/// copies the context's file.
#[test]
fn copy_sources_resolve_symlinks_inside_the_context() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let host_file = outside.path().join("host-secret");
    std::fs::write(&host_file, SECRET).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    symlink(&host_file, ctx.path().join("to-host")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY to-host /x\n",
    )
    .unwrap();
    let stderr = fails(build(root.path(), ctx.path(), &[]));
    assert!(
        stderr.contains("not found in the build context") && !stderr.contains(SECRET),
        "{stderr}"
    );
    // The same absolute target, recreated inside the context, is what is copied.
    let inside = ctx.path().join(host_file.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::write(&inside, "context copy").unwrap();
    let out = tempfile::tempdir().unwrap();
    ok(build(
        root.path(),
        ctx.path(),
        &["-o", &format!("type=local,dest={}", out.path().display())],
    ));
    assert_eq!(
        std::fs::read_to_string(out.path().join("x")).unwrap(),
        "context copy"
    );
}

#[test]
fn an_oversized_dockerfile_is_refused_before_it_is_read() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    // Sparse: 9 GiB claimed, nothing on disk; reading it whole would exhaust memory.
    let file = std::fs::File::create(ctx.path().join("Dockerfile")).unwrap();
    file.set_len(9 << 30).unwrap();
    let stderr = fails(build(root.path(), ctx.path(), &[]));
    assert!(
        stderr.contains("unable to open the Dockerfile")
            && stderr.contains("larger than the limit of 8388608 bytes"),
        "{stderr}"
    );
    // The same through standard input.
    let mut child = rbuild(root.path())
        .args(["build", "-q", "-f", "-"])
        .arg(ctx.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let line = [b'#'; 4096];
        // Stops when rbuild closes the pipe after the limit.
        for _ in 0..4096 {
            if stdin.write_all(&line).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = fails(out);
    assert!(
        stderr.contains("on standard input is larger than the limit of 8388608 bytes"),
        "{stderr}"
    );
}
