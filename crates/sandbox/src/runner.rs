//! rbuild's side of a step: start the helper, answer it, collect output and result.

use std::collections::VecDeque;
use std::io::{BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use crate::protocol::{recv, send, FromHelper, ToHelper};
use crate::spec::{FileBind, IdMapping, Isolation, StepOutcome, StepSpec, StepStatus, Stub};
use crate::SandboxError;

/// Lines of output kept for error messages.
const TAIL_LINES: usize = 20;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

enum Event {
    Output(OutputStream, Vec<u8>),
    OutputClosed,
    Control(FromHelper),
    ControlClosed,
    ControlBroken(String),
}

/// A scratch directory holding the step's /etc files, removed on drop.
struct EtcScratch(PathBuf);

impl Drop for EtcScratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir() -> Result<EtcScratch, SandboxError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let dir = std::env::temp_dir().join(format!(
            "rbuild-step-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(EtcScratch(dir)),
            // Left by a killed process that had our pid: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(SandboxError::io(format!("creating {}", dir.display()), e));
            }
        }
    }
}

/// Adds /etc/hosts and /etc/resolv.conf unless the spec has its own. No /etc/hostname: as
/// in BuildKit's runc executor, a step sees the root's own file, or none.
fn add_etc_files(spec: &mut StepSpec, scratch: &Path) -> Result<(), SandboxError> {
    let mut wanted: Vec<(&str, Vec<u8>)> = vec![(
        "/etc/hosts",
        format!(
            "127.0.0.1\tlocalhost {0}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            spec.hostname
        )
        .into_bytes(),
    )];
    if let Ok(resolv) = std::fs::read("/etc/resolv.conf") {
        wanted.push(("/etc/resolv.conf", resolv));
    }
    for (target, content) in wanted {
        if spec.etc_files.iter().any(|f| f.target == target) {
            continue;
        }
        let source = scratch.join(target.trim_start_matches("/etc/"));
        std::fs::write(&source, content)
            .map_err(|e| SandboxError::io(format!("writing {}", source.display()), e))?;
        spec.etc_files.push(FileBind {
            target: target.to_string(),
            source,
        });
    }
    Ok(())
}

fn forward_output(stream: OutputStream, mut pipe: impl Read, tx: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(Event::Output(stream, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Event::OutputClosed);
}

/// Keeps the last lines of output.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: [Vec<u8>; 2],
}

impl Tail {
    fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        let partial = &mut self.partial[stream as usize];
        partial.extend_from_slice(bytes);
        while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            self.lines
                .push_back(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            if self.lines.len() > TAIL_LINES {
                self.lines.pop_front();
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        for partial in std::mem::take(&mut self.partial) {
            if !partial.is_empty() {
                self.lines
                    .push_back(String::from_utf8_lossy(&partial).into_owned());
            }
        }
        let excess = self.lines.len().saturating_sub(TAIL_LINES);
        self.lines.into_iter().skip(excess).collect()
    }
}

/// What confines a step beyond its isolation.
pub(crate) struct Confinement<'a> {
    /// The seccomp filter its command runs under (`None`: unconfined).
    pub seccomp: Option<&'a crate::seccomp::StepFilter>,
    /// Restricted isolation only: what of the builder's file system it must not reach.
    pub protected: Option<&'a crate::restricted::Protected>,
}

/// Runs one step with `isolation` (already resolved). Blocks until the step and everything
/// it started are gone (a userns helper's own exit, which drops the step's mounts, may
/// still be under way: see `reap_in_background`).
pub(crate) fn run_step(
    program: &Path,
    args: &[String],
    spec: &StepSpec,
    isolation: Isolation,
    root_range: Option<&crate::root_range::RootRange>,
    confinement: Confinement<'_>,
    output: &mut dyn FnMut(OutputStream, &[u8]),
) -> Result<StepOutcome, SandboxError> {
    let Confinement { seccomp, protected } = confinement;
    let scratch = scratch_dir()?;
    let mut spec = spec.clone();
    spec.isolation = isolation;
    // In place (restricted), the stage's own /etc files are the step's: nothing is bound.
    if isolation != Isolation::Restricted {
        add_etc_files(&mut spec, &scratch.0)?;
    }

    let (ours, theirs) = UnixStream::pair().map_err(|e| SandboxError::io("socketpair", e))?;
    let theirs_fd: OwnedFd = theirs.into();
    let theirs_raw = theirs_fd.as_raw_fd();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::protocol::prepare_helper_command(&mut command, Some(theirs_raw), &[]);
    let mut child = command.spawn().map_err(|e| {
        SandboxError::io(
            format!("starting the sandbox helper {}", program.display()),
            e,
        )
    })?;
    drop(theirs_fd);

    let (tx, rx) = mpsc::channel();
    // Cannot fail: both streams were set to Stdio::piped() above.
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let readers = [
        {
            let tx = tx.clone();
            std::thread::spawn(move || forward_output(OutputStream::Stdout, stdout, tx))
        },
        {
            let tx = tx.clone();
            std::thread::spawn(move || forward_output(OutputStream::Stderr, stderr, tx))
        },
    ];
    let control_reader = ours
        .try_clone()
        .map_err(|e| SandboxError::io("control socket", e))?;
    let control_thread = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(control_reader);
            loop {
                match recv::<FromHelper>(&mut reader) {
                    Ok(Some(msg)) => {
                        if tx.send(Event::Control(msg)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Event::ControlClosed);
                        break;
                    }
                    Err(e) => {
                        let _ = tx.send(Event::ControlBroken(e.to_string()));
                        break;
                    }
                }
            }
        })
    };
    drop(tx);

    let send_result = send(
        &ours,
        &ToHelper::Run(Box::new(spec.clone()), seccomp.cloned()),
    );
    let mut id_mapping = IdMapping::None;
    let mut stubs: Vec<Stub> = Vec::new();
    let mut status: Option<StepStatus> = None;
    let send_result = match (send_result, protected) {
        (Ok(()), Some(protected)) => send(&ours, &ToHelper::Protect(protected.clone())),
        (result, _) => result,
    };
    let mut ownership = None;
    let mut error: Option<SandboxError> = send_result
        .err()
        .map(|e| SandboxError::io("sending the step to the helper", e));
    let mut tail = Tail::default();
    let mut open_sources = 3;
    while open_sources > 0 {
        let Ok(event) = rx.recv() else { break };
        match event {
            Event::Output(stream, bytes) => {
                tail.push(stream, &bytes);
                output(stream, &bytes);
            }
            Event::OutputClosed | Event::ControlClosed => open_sources -= 1,
            Event::ControlBroken(msg) => {
                open_sources -= 1;
                error.get_or_insert(SandboxError::Helper {
                    stage: "control".into(),
                    message: msg,
                });
            }
            Event::Control(FromHelper::Unshared { pid }) => {
                let reply = match crate::idmap::write_id_maps(pid, root_range) {
                    Ok(kind) => {
                        id_mapping = kind;
                        ToHelper::Mapped(kind)
                    }
                    // The helper reports it back as the "id map" stage's failure.
                    Err(e) => ToHelper::MapFailed(e.to_string()),
                };
                let _ = send(&ours, &reply);
            }
            Event::Control(FromHelper::Stubs(mut s)) => stubs.append(&mut s),
            Event::Control(FromHelper::Ownership(table)) => ownership = Some(table),
            Event::Control(FromHelper::Error { stage, mut message }) => {
                if id_mapping == IdMapping::SingleId && message.contains("single-id mapping") {
                    message.push_str(&format!(
                        ". Add a range for {0} to /etc/subuid and /etc/subgid (e.g. `{0}:100000:65536`) \
                         and install newuidmap/newgidmap (Debian package uidmap)",
                        crate::idmap::current_user_label()
                    ));
                }
                error.get_or_insert(SandboxError::Helper { stage, message });
            }
            Event::Control(FromHelper::Exited { code, signal }) => {
                status.get_or_insert(StepStatus { code, signal });
            }
        }
    }
    // A userns step is over once its control socket is closed: the helper closes it only
    // when it exits, after reaping the PID namespace's init, whose exit took every process
    // of the namespace with it (the command cannot hold the socket: close-on-exec). What
    // is left is the helper's own exit, which tears down the step's mount namespace: for a
    // large overlay, dropping its dentries and inodes takes about a second per 50,000
    // files on a loaded machine, and nothing rbuild does next needs that done (it reads the
    // upper directory, never the overlay). The helper is reaped by a thread instead.
    let helper_status = match status {
        Some(_) if isolation == Isolation::Userns && error.is_none() => {
            reap_in_background(child);
            None
        }
        _ => Some(
            child
                .wait()
                .map_err(|e| SandboxError::io("waiting for the helper", e))?,
        ),
    };
    for reader in readers {
        let _ = reader.join();
    }
    drop(ours);
    let _ = control_thread.join();
    if let Some(err) = error {
        return Err(err);
    }
    let Some(status) = status else {
        let ended = helper_status.map_or_else(String::new, |s| format!(" ({s})"));
        return Err(SandboxError::Helper {
            stage: "helper".into(),
            message: format!("the sandbox helper ended{ended} without reporting the step's result"),
        });
    };
    Ok(StepOutcome {
        status,
        isolation,
        id_mapping,
        stubs,
        tail: tail.finish(),
        ownership,
    })
}

/// Hands a helper that is exiting to the process's reaper thread (started on first use),
/// which waits for each in turn; where that thread cannot start, waits here.
fn reap_in_background(child: std::process::Child) {
    static REAPER: std::sync::OnceLock<Option<mpsc::Sender<std::process::Child>>> =
        std::sync::OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<std::process::Child>();
        std::thread::Builder::new()
            .name("rbuild-helper-reaper".into())
            .spawn(move || {
                for mut child in rx {
                    let _ = child.wait();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let unsent = match reaper {
        Some(tx) => tx.send(child).err().map(|e| e.0),
        None => Some(child),
    };
    if let Some(mut child) = unsent {
        let _ = child.wait();
    }
}
