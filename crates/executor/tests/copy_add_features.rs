//! COPY/ADD features beyond the basics, end to end with real parts: `ADD <url>` against a
//! real local HTTP server (with `--checksum`), `ADD` of a git repository served by a real
//! `git daemon`, `--exclude`, `--parents`, `--link`, symbolic `--chmod`, `--chown` on an
//! extracted archive, and `RUN --mount=type=ssh` with a real `ssh-agent`. Needs root and
//! Debian's busybox-static, git and openssh-client. The binary is its own sandbox helper.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod support;
use std::sync::{Arc, Mutex};
use support::Fixture;

use rbuild_image::Digest;
use rbuild_sandbox::test_support::run_tests;

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    run_tests(&[
        ("add_url_and_checksum", add_url_and_checksum),
        ("add_git_repository", add_git_repository),
        ("copy_exclude", copy_exclude),
        ("copy_parents", copy_parents),
        (
            "copy_link_does_not_follow_dest",
            copy_link_does_not_follow_dest,
        ),
        ("symbolic_chmod", symbolic_chmod),
        ("add_archive_with_chown", add_archive_with_chown),
        ("run_mount_ssh_agent", run_mount_ssh_agent),
        ("add_git_url_query", add_git_url_query),
        (
            "a_named_local_context_stays_in_its_directory",
            a_named_local_context_stays_in_its_directory,
        ),
        ("run_mount_ssh_key_files", run_mount_ssh_key_files),
    ])
}

fn assert_has(err: &str, needle: &str) {
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

/// A tiny real HTTP/1.1 server on 127.0.0.1: fixed routes, counts requests per path.
struct HttpServer {
    port: u16,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// A route: body and extra headers.
type Routes = BTreeMap<String, (Vec<u8>, Vec<String>)>;

impl HttpServer {
    fn start(routes: Routes) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                *counted.lock().unwrap().entry(path.clone()).or_default() += 1;
                let response = match routes.get(&path) {
                    Some((body, headers)) => {
                        let mut head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        for h in headers {
                            head.push_str(h);
                            head.push_str("\r\n");
                        }
                        head.push_str("\r\n");
                        let mut out = head.into_bytes();
                        out.extend_from_slice(body);
                        out
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            }
        });
        HttpServer { port, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn add_url_and_checksum() {
    let fx = Fixture::new();
    fx.file("local.txt", "local", 0o644);
    let tar = make_tar(&fx, &[("inside.txt", "in the tar", 0o644)]);
    let routes = Routes::from([
        (
            "/files/hello.txt".to_string(),
            (
                b"hello from http\n".to_vec(),
                vec!["Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT".to_string()],
            ),
        ),
        ("/plain".to_string(), (b"plain".to_vec(), vec![])),
        ("/data.tar".to_string(), (tar, vec![])),
    ]);
    let server = HttpServer::start(routes);
    let hello = server.url("/files/hello.txt");
    let plain = server.url("/plain");
    let good = Digest::of(b"plain");
    let built = fx.build_ok(&format!(
        "FROM busybox\n\
         ADD {hello} /downloads/\n\
         ADD --chown=app:wheel --chmod=640 {hello} /owned.txt\n\
         ADD --checksum={good} {plain} /plain-file\n\
         ADD {tar_url} /tars/\n\
         ADD --unpack=true {tar_url} /unpacked/\n",
        tar_url = server.url("/data.tar"),
    ));
    assert_eq!(built.read("downloads/hello.txt"), "hello from http\n");
    let md = built.meta("downloads/hello.txt");
    assert_eq!(md.mode() & 0o7777, 0o600, "downloads are 0600");
    assert_eq!((md.uid(), md.gid()), (0, 0));
    assert_eq!(md.mtime(), 1_445_412_480, "mtime from Last-Modified");
    let owned = built.meta("owned.txt");
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1000, 10, 0o640),
        "--chown/--chmod apply to downloads"
    );
    assert_eq!(built.read("plain-file"), "plain");
    assert_eq!(
        built.meta("plain-file").mtime(),
        0,
        "no Last-Modified: the epoch"
    );
    assert!(
        built.path("tars/data.tar").is_file(),
        "a downloaded archive is not extracted by default"
    );
    assert_eq!(built.read("unpacked/inside.txt"), "in the tar");
    assert_eq!(
        server.hits("/files/hello.txt"),
        1,
        "one download per URL per build"
    );
    assert!(built.created_by().contains(&format!(
        "ADD --chown=app:wheel --chmod=640 {hello} /owned.txt # buildkit"
    )));

    // Credentials in a URL reach neither the history nor an error.
    let secret_url = plain.replace("http://", "http://user:s3cret@");
    let built = fx.build_ok(&format!("FROM busybox\nADD {secret_url} /with-creds\n"));
    assert_eq!(built.read("with-creds"), "plain");
    let history = built.created_by().join("\n");
    assert!(
        !history.contains("s3cret") && history.contains("xxxxx@"),
        "{history}"
    );
    let err = fx.build_err(&format!(
        "FROM busybox\nADD {} /x\n",
        secret_url.replace("/plain", "/nope")
    ));
    // The Dockerfile line the error quotes is the user's own text; the rest is ours.
    let ours = err.split_once('\n').map_or("", |(_, rest)| rest);
    assert!(!ours.contains("s3cret") && ours.contains("xxxxx@"), "{err}");

    let bad = Digest::of(b"something else");
    let err = fx.build_err(&format!("FROM busybox\nADD --checksum={bad} {plain} /x\n"));
    assert_has(&err, "digest mismatch");
    assert_has(&err, &good.to_string());
    assert_has(&err, &bad.to_string());
    let err = fx.build_err(&format!(
        "FROM busybox\nADD --checksum={good} local.txt /x\n"
    ));
    assert_has(&err, "checksum requires HTTP(S) or Git sources");
    let err = fx.build_err(&format!("FROM busybox\nADD {} /x\n", server.url("/nope")));
    assert_has(&err, "404");
    let err = fx.build_err(&format!("FROM busybox\nCOPY {plain} /x\n"));
    assert_has(&err, "source can't be a URL for COPY");
}

/// A tar file (made with the real `tar`) of `files`; returns its bytes.
fn make_tar(fx: &Fixture, files: &[(&str, &str, u32)]) -> Vec<u8> {
    let src = fx.tmp.path().join(format!("tar-src-{}", files.len()));
    for (rel, content, mode) in files {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let out = fx.tmp.path().join(format!("out-{}.tar", files.len()));
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills a child started in its own process group, and the group, when dropped (`git
/// daemon` runs `git-daemon` as a child of a wrapper, which would outlive a plain kill).
struct Reaper(std::process::Child);

impl Reaper {
    fn spawn(command: &mut Command) -> Reaper {
        use std::os::unix::process::CommandExt;
        let what = format!("{command:?}");
        Reaper(
            command
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{what}: {e}")),
        )
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the group is our child's.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGTERM) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A repository `proj.git` served by a real `git daemon`: `README` is "v1\n" at tag `v1`
/// and "v2\n" on `main`, `sub/inner.txt` in both.
struct ServedRepo {
    _daemon: Reaper,
    repo: PathBuf,
    url: String,
    v1: String,
}

fn serve_git_repo(fx: &Fixture) -> ServedRepo {
    let repos = fx.tmp.path().join("repos");
    let repo = repos.join("proj.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    std::fs::write(repo.join("README"), "v1\n").unwrap();
    std::fs::write(repo.join("sub/inner.txt"), "inner\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "v1"]);
    let v1 = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("README"), "v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let port = free_port();
    let daemon = Reaper::spawn(
        Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", repos.display()),
            ])
            .arg(&repos)
            // It logs the readiness probe's hang-up.
            .stderr(std::process::Stdio::null()),
    );
    let url = format!("git://127.0.0.1:{port}/proj.git");
    let mut ready = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready, "git daemon did not start");
    ServedRepo {
        _daemon: daemon,
        repo,
        url,
        v1,
    }
}

fn add_git_repository() {
    let fx = Fixture::new();
    let ServedRepo { url, v1, .. } = &serve_git_repo(&fx);
    let built = fx.build_ok(&format!(
        "FROM busybox\n\
         ADD {url} /head/\n\
         ADD {url}#v1 /tagged/\n\
         ADD --checksum={v1} {url}#v1:sub /subdir/\n\
         ADD --keep-git-dir=true {url}#v1 /withgit/\n"
    ));
    assert_eq!(built.read("head/README"), "v2\n", "the default branch");
    assert!(!built.path("head/.git").exists(), "no .git by default");
    assert_eq!(built.read("tagged/README"), "v1\n");
    assert_eq!(built.read("tagged/sub/inner.txt"), "inner\n");
    assert_eq!(built.read("subdir/inner.txt"), "inner\n", "#ref:subdir");
    assert!(built.path("withgit/.git").is_dir(), "--keep-git-dir");
    let err = fx.build_err(&format!(
        "FROM busybox\nADD --checksum=0123456789abcdef {url}#v1 /x/\n"
    ));
    assert_has(&err, "expected checksum to match 0123456789abcdef");
    assert_has(&err, v1);
}

fn copy_exclude() {
    let fx = Fixture::new();
    fx.file("dir1/a.txt", "a", 0o644)
        .file("dir1/b.md", "b", 0o644)
        .file("dir1/sub/c.md", "c", 0o644)
        .file("dir1/sub/keep.md", "k", 0o644)
        .file("dir2/x.md", "x", 0o644)
        .file("dir2/y.txt", "y", 0o644);
    let built = fx.build_ok(
        "FROM busybox\n\
         COPY --exclude=**/*.md --exclude=!**/keep.md dir1 /ex/\n\
         COPY --exclude=*.md dir* /wild/\n\
         ADD --exclude=sub dir1 /added/\n",
    );
    assert!(built.path("ex/a.txt").is_file());
    assert!(!built.path("ex/b.md").exists(), "excluded");
    assert!(!built.path("ex/sub/c.md").exists(), "excluded below too");
    assert_eq!(
        built.read("ex/sub/keep.md"),
        "k",
        "a ! exception re-includes"
    );
    assert!(built.path("wild/a.txt").is_file() && built.path("wild/y.txt").is_file());
    assert!(!built.path("wild/b.md").exists() && !built.path("wild/x.md").exists());
    assert!(
        built.path("wild/sub/c.md").is_file(),
        "*.md only matches at the top of each source"
    );
    assert!(built.path("added/b.md").is_file());
    assert!(
        !built.path("added/sub").exists(),
        "a directory is excluded whole"
    );
    let err = fx.build_err("FROM busybox\nCOPY --exclude=! dir1 /x/\n");
    assert_has(&err, "--exclude");
}

fn copy_parents() {
    let fx = Fixture::new();
    fx.file("a/b/c.txt", "c", 0o644)
        .file("a/b/d.md", "d", 0o644)
        .file("x/y/z.txt", "z", 0o644)
        .file("other.txt", "o", 0o644);
    std::fs::set_permissions(fx.context.join("a"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let built = fx.build_ok(
        "FROM busybox\n\
         COPY --parents a/b/c.txt /p1/\n\
         COPY --parents a/./b/c.txt /p2/\n\
         COPY --parents */*/*.txt /p3/\n\
         COPY --parents x/y /p4\n\
         COPY --parents nomatch*/q /p5/\n",
    );
    assert_eq!(built.read("p1/a/b/c.txt"), "c");
    assert!(!built.path("p1/a/b/d.md").exists());
    assert_eq!(
        built.mode("p1/a"),
        0o750,
        "parent directories keep the source's metadata"
    );
    assert_eq!(built.read("p2/b/c.txt"), "c", "/./ pivots");
    assert!(!built.path("p2/a").exists());
    assert_eq!(built.read("p3/a/b/c.txt"), "c");
    assert_eq!(built.read("p3/x/y/z.txt"), "z");
    assert!(!built.path("p3/a/b/d.md").exists() && !built.path("p3/other.txt").exists());
    assert_eq!(built.read("p4/x/y/z.txt"), "z");
    assert!(
        built.path("p5").is_dir() && std::fs::read_dir(built.path("p5")).unwrap().count() == 0,
        "a pattern matching nothing copies nothing"
    );
    assert!(built
        .created_by()
        .contains(&"COPY --parents a/b/c.txt /p1/ # buildkit".to_string()));
    let err = fx.build_err("FROM busybox\nCOPY --parents a/nope.txt /p/\n");
    assert_has(&err, "not found");
}

fn copy_link_does_not_follow_dest() {
    let fx = Fixture::new();
    fx.file("f.txt", "f", 0o644);
    let built = fx.build_ok(
        "FROM busybox\n\
         RUN mkdir /real /real2 && ln -s /real /linkdir && ln -s /real2 /plaindir\n\
         COPY --link f.txt /linkdir/\n\
         COPY f.txt /plaindir/\n",
    );
    assert!(
        built.meta("linkdir").is_dir(),
        "--link replaces the symlink at the destination with a directory"
    );
    assert_eq!(built.read("linkdir/f.txt"), "f");
    assert!(
        !built.path("real/f.txt").exists(),
        "the symlink was not followed"
    );
    assert!(
        built.meta("plaindir").file_type().is_symlink() && built.path("real2/f.txt").is_file(),
        "plain COPY follows it"
    );
    let link_layer = &built.layers[built.layers.len() - 2];
    let mut paths = fx.layer_paths(link_layer);
    paths.sort();
    assert_eq!(
        paths,
        vec!["linkdir", "linkdir/f.txt"],
        "the layer holds only the copy"
    );
}

fn symbolic_chmod() {
    let fx = Fixture::new();
    fx.file("f.txt", "f", 0o664)
        .file("d/plain.txt", "p", 0o640)
        .file("d/run.sh", "r", 0o740)
        .file("d/sub/x", "x", 0o600);
    std::fs::set_permissions(
        fx.context.join("d/sub"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let built = fx.build_ok(
        "FROM busybox\n\
         COPY --chmod=u+x,g-w f.txt /s1\n\
         COPY --chmod=a=rX d /s2/\n\
         COPY --chmod=go=u-w f.txt /s3\n",
    );
    assert_eq!(built.mode("s1"), 0o744);
    assert_eq!(built.mode("s2/plain.txt"), 0o444);
    assert_eq!(built.mode("s2/run.sh"), 0o555, "X: executable files");
    assert_eq!(built.mode("s2/sub"), 0o555, "X: directories");
    assert_eq!(built.mode("s2/sub/x"), 0o444);
    assert_eq!(built.mode("s3"), 0o644);
    assert!(built
        .created_by()
        .contains(&"COPY --chmod=u+x,g-w f.txt /s1 # buildkit".to_string()));
    let err = fx.build_err("FROM busybox\nCOPY --chmod=u+z f.txt /x\n");
    assert_has(&err, "invalid chmod parameter: 'u+z'");
    let err = fx.build_err("FROM busybox\nCOPY --chmod=0999 f.txt /x\n");
    assert_has(&err, "it should be octal string and between 0 and 07777");
}

fn add_archive_with_chown() {
    let fx = Fixture::new();
    let tar = make_tar(
        &fx,
        &[("top.txt", "t", 0o640), ("bin/tool", "#!/bin/sh\n", 0o4755)],
    );
    std::fs::write(fx.context.join("t.tar"), tar).unwrap();
    let built = fx.build_ok("FROM busybox\nADD --chown=1234:5678 --chmod=600 t.tar /x/\n");
    for rel in ["x", "x/top.txt", "x/bin", "x/bin/tool"] {
        let md = built.meta(rel);
        assert_eq!(
            (md.uid(), md.gid()),
            (1234, 5678),
            "{rel} owned as --chown says"
        );
    }
    assert_eq!(
        built.mode("x/top.txt"),
        0o640,
        "--chmod does not apply to archive contents"
    );
    assert_eq!(
        built.mode("x/bin/tool"),
        0o4755,
        "setuid survives the chown"
    );
}

fn run_mount_ssh_agent() {
    let fx = Fixture::new();
    let dir = fx.tmp.path().join("ssh");
    std::fs::create_dir(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let _agent = Reaper::spawn(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null()),
    );
    for _ in 0..50 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let key = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rbuild-test-key",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh-add of the test key");

    copy_ssh_add_into_context(&fx);
    let mut request = fx.request(
        "FROM busybox\n\
         COPY sys/ /\n\
         RUN --mount=type=ssh echo \"$SSH_AUTH_SOCK\" > /sock && ssh-add -l > /keys\n\
         RUN --mount=type=ssh,id=other,target=/agent ssh-add -l > /keys2\n\
         RUN --mount=type=ssh,id=absent test ! -e /run/buildkit/ssh_agent.0 && touch /optional-ok\n",
    );
    request.ssh = BTreeMap::from([
        ("default".to_string(), socket.clone()),
        ("other".to_string(), socket.clone()),
    ]);
    let built = fx.built(&request);
    assert_eq!(built.read("sock").trim(), "/run/buildkit/ssh_agent.0");
    let keys = built.read("keys");
    assert!(
        keys.contains("rbuild-test-key") && keys.contains("ED25519"),
        "the agent's key is listed in the step: {keys:?}"
    );
    assert!(
        built.read("keys2").contains("rbuild-test-key"),
        "id= and target="
    );
    assert!(
        built.path("optional-ok").exists(),
        "an optional ssh mount without an agent"
    );
    assert!(
        !built.path("run/buildkit").exists() && !built.path("agent").exists(),
        "the socket mount points are not in a layer"
    );
    let mut request = fx.request("FROM busybox\nRUN --mount=type=ssh,required=true true\n");
    request.ssh.clear();
    let err = fx.build(&request).expect_err("no agent").to_string();
    assert_has(&err, "no SSH key \"default\" forwarded");
}

/// The host's ssh-add and its libraries, put in the context under `sys/` at the host's
/// paths (`COPY sys/ /` puts them in the image: busybox has no ssh-add).
fn copy_ssh_add_into_context(fx: &Fixture) {
    let ssh_add = PathBuf::from("/usr/bin/ssh-add");
    let mut files = vec![ssh_add.clone()];
    let ldd = Command::new("ldd").arg(&ssh_add).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(PathBuf::from(path));
        }
    }
    for file in &files {
        let dest = fx.context.join("sys").join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(file, &dest).unwrap();
    }
}

/// BuildKit's query form of git URLs (`?ref=`, `?tag=`, `?branch=`, `?subdir=`,
/// `?checksum=`, `?keep-git-dir`), alone and with a fragment that agrees, and its errors.
fn add_git_url_query() {
    let fx = Fixture::new();
    let served = serve_git_repo(&fx);
    let (url, v1) = (&served.url, &served.v1);
    let short = &v1[..12];
    let built = fx.build_ok(&format!(
        "FROM busybox\n\
         ADD {url}?ref=v1 /ref/\n\
         ADD {url}?tag=v1&subdir=sub /tag-subdir/\n\
         ADD {url}?branch=main /branch/\n\
         ADD {url}?ref=v1&checksum={short} /checksum/\n\
         ADD --checksum={short} {url}?tag=v1&commit={short} /both-checksums/\n\
         ADD {url}?ref=v1&keep-git-dir=true /withgit/\n\
         ADD {url}?ref=v1#v1:sub /agreeing-fragment/\n"
    ));
    assert_eq!(built.read("ref/README"), "v1\n", "?ref=");
    assert_eq!(
        built.read("tag-subdir/inner.txt"),
        "inner\n",
        "?tag=&subdir="
    );
    assert!(!built.path("tag-subdir/README").exists(), "only the subdir");
    assert_eq!(built.read("branch/README"), "v2\n", "?branch=");
    assert_eq!(built.read("checksum/README"), "v1\n", "?checksum=");
    assert_eq!(built.read("both-checksums/README"), "v1\n");
    assert!(!built.path("ref/.git").exists(), "no .git by default");
    assert!(built.path("withgit/.git").is_dir(), "?keep-git-dir=true");
    assert_eq!(built.read("agreeing-fragment/inner.txt"), "inner\n");
    assert!(
        built
            .created_by()
            .iter()
            .any(|c| c.contains(&format!("ADD {url}?tag=v1&subdir=sub /tag-subdir/"))),
        "history records the URL as written: {:?}",
        built.created_by()
    );

    // The step cache keys a git source by the commit its ref resolves to: moving the
    // branch runs the step again, with the new content.
    let dockerfile = format!("FROM busybox\nADD {url}?branch=main /b/\n");
    assert_eq!(fx.build_ok(&dockerfile).read("b/README"), "v2\n");
    std::fs::write(served.repo.join("README"), "v3\n").unwrap();
    git(&served.repo, &["commit", "-q", "-am", "three"]);
    let again = fx.build_ok(&dockerfile);
    assert_eq!(
        again.read("b/README"),
        "v3\n",
        "a moved branch is a cache miss"
    );
    assert!(
        again.events.cached().is_empty(),
        "{:?}",
        again.events.cached()
    );

    for (add, needle) in [
        (
            format!("ADD {url}?ref=v1&checksum=0123456789abcdef /x/"),
            "expected checksum to match 0123456789abcdef".to_string(),
        ),
        (
            format!("ADD {url}?ref=v1&checksum=zz /x/"),
            "invalid checksum zz for Git URL, expected hex commit hash".to_string(),
        ),
        (
            format!("ADD --checksum=aaaa {url}?ref=v1&checksum=bbbb /x/"),
            r#"checksum mismatch "aaaa" != "bbbb""#.to_string(),
        ),
        (
            format!("ADD --keep-git-dir=false {url}?keep-git-dir=true /x/"),
            "inconsistent keep-git-dir configuration".to_string(),
        ),
        (
            format!("ADD {url}?ref=main#v1 /x/"),
            r#"ref conflicts: "v1" vs "main""#.to_string(),
        ),
        (
            format!("ADD {url}?tag=v1&branch=main /x/"),
            "branch conflicts with tag".to_string(),
        ),
        (
            format!("ADD {url}?depth=1 /x/"),
            r#"unexpected query "depth""#.to_string(),
        ),
        (
            format!("ADD {url}?ref= /x/"),
            r#"query "ref" has no value"#.to_string(),
        ),
        (format!("ADD {url}?tag=v9 /x/"), "refs/tags/v9".to_string()),
    ] {
        let err = fx.build_err(&format!("FROM busybox\n{add}\n"));
        assert_has(&err, &needle);
        assert_has(&err, "Dockerfile:2: ADD");
    }
}

/// `--ssh ID=KEYFILE`: a real key made by ssh-keygen, loaded into a private ssh-agent
/// that a RUN step reaches through the ssh mount; the agent is gone once dropped. A key
/// with a passphrase is refused, naming the file, without prompting.
fn run_mount_ssh_key_files() {
    use rbuild_executor::ssh_agent::SshAgent;
    let fx = Fixture::new();
    let dir = fx.tmp.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let keygen = |name: &str, passphrase: &str| {
        let key = dir.join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success(), "ssh-keygen");
        key
    };
    let key = keygen("rbuild-key-file", "");
    let other = keygen("rbuild-other-key", "");
    // ssh-add insists on 0600 for files it opens; a key handed over by buildx need not be.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fingerprint = |key: &Path| {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().nth(1).unwrap().to_string()
    };
    let agents = fx.tmp.path().join("agents");
    let agent = SshAgent::start(&agents, &[key.clone(), other.clone()])
        .unwrap_or_else(|e| panic!("starting the agent: {e}"));
    let socket = agent.socket().to_path_buf();
    assert!(socket.starts_with(&agents), "{}", socket.display());
    let private = socket.parent().unwrap();
    assert_eq!(
        std::fs::metadata(private).unwrap().permissions().mode() & 0o777,
        0o700,
        "the agent's directory is private"
    );

    copy_ssh_add_into_context(&fx);
    let mut request = fx.request(
        "FROM busybox\n\
         COPY sys/ /\n\
         RUN --mount=type=ssh ssh-add -l > /keys\n",
    );
    request.ssh = BTreeMap::from([("default".to_string(), socket.clone())]);
    let built = fx.built(&request);
    let keys = built.read("keys");
    for (name, key) in [("rbuild-key-file", &key), ("rbuild-other-key", &other)] {
        let fp = fingerprint(key);
        assert!(
            keys.lines().any(|l| l.contains(&fp) && l.contains(name)),
            "{name} ({fp}) is listed through the forwarded agent: {keys:?}"
        );
    }
    // No layer holds the private key.
    let secret = std::fs::read_to_string(&key).unwrap();
    let body = secret.lines().nth(1).unwrap();
    let flat = fx.flatten(&built);
    for file in regular_files(flat.path()) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(body), "{} holds the key", file.display());
    }

    let pid = agent.pid();
    drop(agent);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the agent is stopped when dropped"
    );
    assert!(!private.exists(), "its directory is removed");

    let locked = keygen("rbuild-locked-key", "hunter2xyz");
    let err = SshAgent::start(&agents, &[key.clone(), locked.clone()])
        .unwrap_err()
        .to_string();
    assert_has(&err, &locked.display().to_string());
    assert_has(&err, "passphrase");
    assert!(!err.contains("hunter2xyz"), "no secret in the message");
    assert_eq!(
        std::fs::read_dir(&agents).unwrap().count(),
        0,
        "a failed start leaves no agent directory behind"
    );
    let not_a_key = dir.join("rbuild-key-file.pub");
    let err = SshAgent::start(&agents, std::slice::from_ref(&not_a_key))
        .unwrap_err()
        .to_string();
    assert_has(&err, &not_a_key.display().to_string());
}

/// The regular files below `root` (symlinks are not followed).
fn regular_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// A local named context (`--build-context ctx=DIR`) is read inside its directory: a
/// `.dockerignore` that is a link to a host file and a link out of the directory read
/// nothing outside it; what its own `.dockerignore` excludes is not copied; and a changed
/// file changes the step's key (no stale cache hit).
fn a_named_local_context_stays_in_its_directory() {
    let fx = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("marker"), "host secret\n").unwrap();
    std::fs::write(outside.path().join("patterns"), "kept\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("kept"), "one\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("patterns"), ctx.join(".dockerignore")).unwrap();
    std::os::unix::fs::symlink(outside.path(), ctx.join("escape")).unwrap();
    let with_context = |dockerfile: &str| {
        let mut request = fx.request(dockerfile);
        request.named_contexts.insert(
            "ctx".into(),
            rbuild_executor::NamedContext::Local(ctx.clone()),
        );
        request
    };

    // The linked .dockerignore reads nothing from the host: `kept` is not excluded.
    let built = fx.built(&with_context("FROM scratch\nCOPY --from=ctx /kept /kept\n"));
    assert_eq!(built.read("kept"), "one\n");

    // A link out of the directory resolves inside it: the host's file is not found.
    match fx.build(&with_context(
        "FROM scratch\nCOPY --from=ctx /escape/marker /got\n",
    )) {
        Ok(_) => panic!("COPY through a link out of a named context read the host"),
        Err(e) => assert!(!e.to_string().contains("host secret"), "{e}"),
    }

    // Its own .dockerignore (a plain file now) excludes what it names.
    std::fs::remove_file(ctx.join(".dockerignore")).unwrap();
    std::fs::write(ctx.join(".dockerignore"), "kept\n").unwrap();
    std::fs::write(ctx.join("other"), "two\n").unwrap();
    match fx.build(&with_context("FROM scratch\nCOPY --from=ctx /kept /kept\n")) {
        Ok(_) => panic!("a file the named context's .dockerignore excludes was copied"),
        Err(e) => assert!(e.to_string().contains("kept"), "{e}"),
    }

    // A changed file is a changed key: the second build copies the new content.
    let copy_other = "FROM scratch\nCOPY --from=ctx /other /other\n";
    assert_eq!(fx.built(&with_context(copy_other)).read("other"), "two\n");
    std::fs::write(ctx.join("other"), "three\n").unwrap();
    assert_eq!(fx.built(&with_context(copy_other)).read("other"), "three\n");
}
