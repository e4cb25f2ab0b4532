//! The supervisor's tests: real supervised shells, in this test process (not a
//! subreaper: only the step's process group is reached).

use super::super::table::{Device, DeviceKind, Owner};
use super::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Runs `script` with /bin/sh under the filter, in `dir`.
fn sh(dir: &Path, script: &str) -> Finished {
    let script = format!("cd '{}' || exit 99\n{script}", dir.display());
    run_command(&["/bin/sh", "-c", &script]).expect("supervised shell")
}

fn disk_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

#[test]
fn chown_is_answered_success_recorded_and_kept_off_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let before = disk_owner(&dir.path().join("f"));
    let done = sh(dir.path(), "chown 1234:5678 f && chown :99 f");
    assert_eq!(done.exit_code(), Some(0), "chown must look successful");
    assert_eq!(
        done.table.owner_of(&dir.path().join("f")).unwrap(),
        Some(Owner { uid: 1234, gid: 99 }),
        "the second chown keeps the recorded uid (-1 means unchanged)"
    );
    assert_eq!(
        disk_owner(&dir.path().join("f")),
        before,
        "the disk keeps its owner, even when the supervisor's user could chown"
    );
}

#[test]
fn a_chown_clears_setid_bits_on_the_disk_as_the_kernel_does() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let modes = [
        ("suid", 0o4755),
        ("sgid-exec", 0o2755),
        ("sgid-noexec", 0o2644),
    ];
    for (name, mode) in modes {
        std::fs::write(dir.path().join(name), b"x").unwrap();
        std::fs::set_permissions(dir.path().join(name), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }
    std::fs::create_dir(dir.path().join("sgid-dir")).unwrap();
    std::fs::set_permissions(
        dir.path().join("sgid-dir"),
        std::fs::Permissions::from_mode(0o2755),
    )
    .unwrap();
    let done = sh(dir.path(), "chown 1:2 suid sgid-exec sgid-noexec sgid-dir");
    assert_eq!(done.exit_code(), Some(0));
    let mode = |name: &str| {
        std::fs::symlink_metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid-exec"), 0o755);
    assert_eq!(mode("sgid-noexec"), 0o2644, "no group exec: the bit stays");
    assert_eq!(mode("sgid-dir"), 0o2755, "a directory keeps its bits");
    assert_eq!(done.table.len(), 4);
}

#[test]
fn lchown_records_the_link_and_chown_the_target() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("target"), b"x").unwrap();
    std::os::unix::fs::symlink("target", dir.path().join("link")).unwrap();
    let done = sh(dir.path(), "chown -h 7:8 link && chown 9:10 link");
    assert_eq!(done.exit_code(), Some(0));
    assert_eq!(
        done.table.owner_of(&dir.path().join("link")).unwrap(),
        Some(Owner { uid: 7, gid: 8 })
    );
    assert_eq!(
        done.table.owner_of(&dir.path().join("target")).unwrap(),
        Some(Owner { uid: 9, gid: 10 })
    );
    assert_eq!(done.table.len(), 2);
}

#[test]
fn chown_of_a_missing_file_fails_as_the_kernel_would() {
    let dir = tempfile::tempdir().unwrap();
    let done = sh(
        dir.path(),
        "chown 1:1 missing 2> err.txt; echo $? > rc.txt; true",
    );
    assert_eq!(done.exit_code(), Some(0));
    assert!(done.table.is_empty(), "{:?}", done.table);
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert!(err.contains("No such file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rc.txt")).unwrap(),
        "1\n"
    );
}

#[test]
fn a_step_sees_itself_as_root_and_identity_changes_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let done = sh(dir.path(), "id -u > uid.txt && id -g > gid.txt");
    assert_eq!(done.exit_code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("uid.txt")).unwrap(),
        "0\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("gid.txt")).unwrap(),
        "0\n"
    );
}

#[test]
fn a_recursive_chown_records_every_entry_through_directory_descriptors() {
    // coreutils' `chown -R` walks with fts and chowns relative to directory descriptors
    // (fchownat(dirfd, name, ...)), as dpkg and tar do: the supervisor resolves each
    // name in the caller's descriptor.
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/file"), b"x").unwrap();
    std::fs::write(tree.join("top"), b"x").unwrap();
    std::os::unix::fs::symlink("top", tree.join("a/link")).unwrap();
    let done = sh(dir.path(), "chown -R 100:101 tree");
    assert_eq!(done.exit_code(), Some(0));
    let expected = Owner { uid: 100, gid: 101 };
    for entry in ["", "a", "a/b", "a/b/file", "top", "a/link"] {
        assert_eq!(
            done.table.owner_of(&tree.join(entry)).unwrap(),
            Some(expected),
            "{entry:?} in {:?}",
            done.table
        );
    }
    assert_eq!(done.table.len(), 6, "{:?}", done.table);
    assert_ne!(disk_owner(&tree.join("a/b/file")), (100, 101));
}

/// This process's umask, from /proc (umask(2) would change it under other threads).
fn own_umask() -> u32 {
    super::super::notify::caller_umask(std::process::id()).expect("Umask in /proc/self/status")
}

#[test]
fn device_nodes_become_placeholders_recorded_as_devices() {
    let dir = tempfile::tempdir().unwrap();
    let done = sh(
        dir.path(),
        "mknod cdev c 1 3 && mknod bdev b 259 70000 && chown 0:6 bdev && mkfifo fifo \
         && [ -c cdev ] && [ -b bdev ] && [ ! -c fifo ] \
         && stat -c '%F %t %T %a %u:%g' cdev bdev > by-stat \
         && python3 -c 'import os, stat; s = os.stat(\"bdev\"); \
            print(stat.S_ISBLK(s.st_mode), os.major(s.st_rdev), os.minor(s.st_rdev))' \
            > by-python",
    );
    assert_eq!(done.exit_code(), Some(0));
    let mode = 0o666 & !own_umask();
    // A step sees the nodes it made (statx and newfstatat), not their stand-ins.
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(
        read("by-stat"),
        format!(
            "character special file 1 3 {mode:o} 0:0\nblock special file 103 11170 {mode:o} 0:6\n"
        ),
    );
    assert_eq!(read("by-python"), "True 259 70000\n");
    assert_eq!(
        done.table.device_of(&dir.path().join("cdev")).unwrap(),
        Some(Device {
            kind: DeviceKind::Char,
            major: 1,
            minor: 3,
            mode
        })
    );
    assert_eq!(
        done.table.device_of(&dir.path().join("bdev")).unwrap(),
        Some(Device {
            kind: DeviceKind::Block,
            major: 259,
            minor: 70000,
            mode
        }),
        "a minor above 255 uses the kernel's split encoding"
    );
    assert_eq!(
        done.table.owner_of(&dir.path().join("bdev")).unwrap(),
        Some(Owner { uid: 0, gid: 6 })
    );
    use std::os::unix::fs::FileTypeExt;
    let cdev = std::fs::symlink_metadata(dir.path().join("cdev")).unwrap();
    assert!(cdev.is_file() && cdev.len() == 0, "a placeholder: {cdev:?}");
    // A FIFO needs no privilege: the kernel made a real one.
    let fifo = std::fs::symlink_metadata(dir.path().join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        done.table.device_of(&dir.path().join("fifo")).unwrap(),
        None
    );
    assert_eq!(done.table.len(), 2);
}

#[test]
fn mknod_over_an_existing_file_fails_as_the_kernel_would() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("taken"), b"keep").unwrap();
    let done = sh(dir.path(), "mknod taken c 1 3 2> err.txt; echo $? > rc.txt");
    assert_eq!(done.exit_code(), Some(0));
    assert!(done.table.is_empty(), "{:?}", done.table);
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert!(err.contains("File exists"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"keep");
}

#[test]
fn the_step_does_not_hold_the_listener() {
    // With the listener, a step could answer its own notifications (and record any
    // owner it likes without the supervisor): the kernel makes it close-on-exec and the
    // child closes it before running its body anyway.
    let dir = tempfile::tempdir().unwrap();
    let done = sh(dir.path(), "ls -l /proc/$$/fd/ > fds.txt");
    assert_eq!(done.exit_code(), Some(0));
    let fds = std::fs::read_to_string(dir.path().join("fds.txt")).unwrap();
    assert!(
        fds.contains("fds.txt"),
        "the listing is of the right process: {fds}"
    );
    assert!(
        !fds.contains("seccomp"),
        "a listener leaked into the step: {fds}"
    );
}

#[test]
fn what_a_step_leaves_running_ends_with_it() {
    // Without this, the background sleep would hold the filter and the supervisor
    // would wait for it (as a container's init exiting ends its processes).
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let done = sh(dir.path(), "sleep 600 & echo $! > bg.txt; exit 0");
    assert_eq!(done.exit_code(), Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let pid = std::fs::read_to_string(dir.path().join("bg.txt")).unwrap();
    // Killed: gone, or a zombie awaiting its reaper, within moments (the listener may
    // hang up while the killed process is still on its way out).
    let status_file = format!("/proc/{}/status", pid.trim());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(&status_file) {
            Err(_) => break,
            Ok(status) if status.contains("State:\tZ") => break,
            Ok(status) => assert!(
                std::time::Instant::now() < deadline,
                "the background process survived its step: {status}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_exit_status_of_the_command_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(sh(dir.path(), "exit 3").exit_code(), Some(3));
    let missing = run_command(&["/nonexistent/program"]).unwrap();
    assert_eq!(missing.exit_code(), Some(127));
}

/// `security.capability` of `path` on the disk, `None` if it has none.
fn disk_capability(path: &Path) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the size given.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn file_capabilities_are_recorded_not_written_and_dropped_by_chown_or_removal() {
    let setcap = "/usr/sbin/setcap";
    assert!(
        Path::new(setcap).exists(),
        "this test needs setcap (Debian package libcap2-bin)"
    );
    let dir = tempfile::tempdir().unwrap();
    for name in ["ping", "chowned", "removed", "plain"] {
        std::fs::write(dir.path().join(name), b"#!/bin/sh\n").unwrap();
    }
    let done = sh(
        dir.path(),
        &format!(
            "{setcap} cap_net_raw+p ping && {setcap} cap_net_raw+p chowned && chown 1:1 chowned \
             && {setcap} cap_net_raw+p removed && {setcap} -r removed"
        ),
    );
    assert_eq!(done.exit_code(), Some(0), "setcap must look successful");
    let ping = done
        .table
        .capability_of(&dir.path().join("ping"))
        .unwrap()
        .expect("recorded")
        .expect("set, not removed");
    assert!(ping.len() == 20 || ping.len() == 24, "{ping:?}");
    let permitted = u32::from_le_bytes([ping[4], ping[5], ping[6], ping[7]]);
    const CAP_NET_RAW: u32 = 13;
    assert_ne!(permitted & (1 << CAP_NET_RAW), 0, "{ping:?}");
    assert_eq!(
        disk_capability(&dir.path().join("ping")),
        None,
        "the disk has no file capability, even where the supervisor's user could write it"
    );
    for dropped in ["chowned", "removed"] {
        assert_eq!(
            done.table.capability_of(&dir.path().join(dropped)).unwrap(),
            Some(None),
            "{dropped}"
        );
    }
    assert_eq!(
        done.table.capability_of(&dir.path().join("plain")).unwrap(),
        None
    );
}

#[test]
fn a_malformed_capability_is_refused_as_the_kernel_would() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    // A 4-byte value: no vfs_cap_data revision has that size.
    let done = sh(
        dir.path(),
        "python3 -c \"import os; os.setxattr('f', 'security.capability', b'\\x00\\x00\\x00\\x02')\" \
         2> err.txt; echo $? > rc.txt",
    );
    assert_eq!(done.exit_code(), Some(0));
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert!(err.contains("Invalid argument"), "{err}");
    assert!(done.table.is_empty(), "{:?}", done.table);
}

/// apt's privilege drop (setgroups, setresgid, setresuid to `_apt`, then checking every id,
/// and that root cannot be had back), a child forked after it, and the shell around it,
/// which stays root: each process has its own fake credentials.
#[test]
fn a_privilege_drop_shows_in_that_process_and_its_children_only() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"python3 -c "
import os
ids = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getresuid()]
os.setgroups([65534, 4])
os.setresgid(65534, 65534, 65534)
os.setresuid(100, 100, 100)
ids += [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
ids += [os.getresuid(), os.getresgid(), os.getgroups()]
try:
    os.setuid(0)
    ids.append('root again')
except PermissionError:
    ids.append('EPERM')
os.setreuid(-1, 100)
pid = os.fork()
if pid == 0:
    open('child.txt', 'w').write(repr((os.getuid(), os.getresgid())))
    os._exit(0)
os.waitpid(pid, 0)
open('ids.txt', 'w').write(repr(ids))
" && id -u > shell.txt && id -g >> shell.txt"#;
    let done = sh(dir.path(), script);
    assert_eq!(done.exit_code(), Some(0));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(
        read("ids.txt"),
        "[0, 0, 0, 0, (0, 0, 0), 100, 100, 65534, 65534, (100, 100, 100), \
         (65534, 65534, 65534), [4, 65534], 'EPERM']"
    );
    assert_eq!(read("child.txt"), "(100, (65534, 65534, 65534))");
    assert_eq!(
        read("shell.txt"),
        "0\n0\n",
        "the parent shell is still root"
    );
}

#[test]
fn stat_shows_the_recorded_owner_and_other_users_files_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chowned"), b"x").unwrap();
    std::fs::write(dir.path().join("others"), b"x").unwrap();
    std::os::unix::fs::chown(dir.path().join("others"), Some(4321), Some(4322)).unwrap();
    std::os::unix::fs::symlink("chowned", dir.path().join("link")).unwrap();
    // coreutils' stat (statx), Python's os.stat/os.lstat (newfstatat) and os.fstat (fstat,
    // or newfstatat with AT_EMPTY_PATH): every one sees the recorded owner.
    let done = sh(
        dir.path(),
        "chown 1234:5678 chowned && chown -h 11:12 link \
         && stat -c %u:%g chowned > by-stat \
         && stat -c %u:%g link >> by-stat \
         && stat -c %u:%g others >> by-stat \
         && python3 -c 'import os; f = open(\"chowned\"); \
            print(*[f\"{s.st_uid}:{s.st_gid}\" for s in (os.stat(\"chowned\"), \
            os.lstat(\"link\"), os.stat(\"link\"), os.fstat(f.fileno()))])' > by-python",
    );
    assert_eq!(done.exit_code(), Some(0));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("by-stat"), "1234:5678\n11:12\n4321:4322\n");
    assert_eq!(read("by-python"), "1234:5678 11:12 1234:5678 1234:5678\n");
    assert_eq!(
        disk_owner(&dir.path().join("chowned")),
        (0, 0),
        "the disk is unchanged"
    );
}

#[test]
fn stat_shows_the_build_users_own_files_as_roots() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(dir.path().join("others"), b"x").unwrap();
    std::os::unix::fs::chown(dir.path().join("others"), Some(4321), Some(4322)).unwrap();
    let script = format!(
        "cd '{}' && touch own && stat -c %u:%g own others > seen \
         && ls -ln own | cut -d' ' -f3,4 >> seen",
        dir.path().display()
    );
    let argv = ["/bin/sh", "-c", script.as_str()];
    // The supervisor must run as a build user (not root) for its ids to stand for root:
    // a forked child drops to nobody and supervises the step there.
    let pid = crate::sys::fork().unwrap();
    if pid == 0 {
        // SAFETY: plain id changes in the forked child, which only exits afterwards.
        let dropped = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(65534, 65534, 65534) == 0
                && libc::setresuid(65534, 65534, 65534) == 0
        };
        let code = match (dropped, run_command(&argv)) {
            (true, Ok(done)) => done.exit_code().unwrap_or(101),
            _ => 102,
        };
        // SAFETY: leaving the forked child without running the test harness's code.
        unsafe { libc::_exit(code) };
    }
    let (_, status) = crate::sys::waitpid(pid, 0).unwrap();
    assert_eq!(crate::sys::decode_status(status).0, Some(0));
    assert_eq!(disk_owner(&dir.path().join("own")), (65534, 65534));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("seen")).unwrap(),
        "0:0\n4321:4322\n0 0\n",
        "the build user's file shows as root's, another user's as it is"
    );
}

#[test]
fn stat_through_proc_self_names_the_caller_not_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    // /proc/self and the magic links under it resolve per process: the kernel answers
    // them, so the caller sees its own, as without the supervisor.
    let done = sh(
        dir.path(),
        "python3 -c 'import os; \
         print(os.stat(\"/proc/self\").st_ino == os.stat(f\"/proc/{os.getpid()}\").st_ino, \
         os.stat(\"/dev/stdin\").st_ino == os.fstat(0).st_ino, \
         os.stat(\"/proc/self/exe\").st_ino == os.stat(os.readlink(\"/proc/self/exe\")).st_ino)' \
         < /dev/null > seen",
    );
    assert_eq!(done.exit_code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("seen")).unwrap(),
        "True True True\n"
    );
}

#[test]
fn owners_shown_for_placed_files_are_shown_not_recorded() {
    use std::ffi::CString;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::write(dir.path().join("secret"), b"x").unwrap();
    let mut shown = OwnershipTable::default();
    for (name, uid, gid) in [("agent.sock", 1000, 1001), ("secret", 7, 8)] {
        let meta = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
        shown.record_owner((meta.dev(), meta.ino()), Owner { uid, gid });
    }
    let script = format!(
        "cd '{}' || exit 99\nstat -c %u:%g agent.sock secret > shown && chown 3:4 secret \
         && stat -c %u:%g secret >> shown",
        dir.path().display()
    );
    let args: Vec<CString> = ["/bin/sh", "-c", &script]
        .iter()
        .map(|a| CString::new(*a).unwrap())
        .collect();
    let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    let done = run_supervised_until(
        || {
            // SAFETY: `args` and `pointers` outlive the call; execv returns only on failure.
            unsafe { libc::execv(args[0].as_ptr(), pointers.as_ptr()) };
            127
        },
        None,
        &[],
        shown,
        None,
    )
    .unwrap();
    assert_eq!(done.exit_code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("shown")).unwrap(),
        "1000:1001\n7:8\n3:4\n",
        "the placed files' owners, then the step's own chown"
    );
    // Only what the step did is recorded for the layer.
    assert_eq!(done.table.owner_of(&socket).unwrap(), None);
    assert_eq!(
        done.table.owner_of(&dir.path().join("secret")).unwrap(),
        Some(Owner { uid: 3, gid: 4 })
    );
}

/// What the tracer reported of its stops ([`TopLevel::stop_report`]).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StopCounts {
    seccomp: u64,
    syscall: u64,
    switched: bool,
}

/// Runs `body` (the step's code, as for [`run_supervised_until`]) traced with top-level
/// names absent from `/` redirected into `top`; the step's end and the tracer's stops.
#[cfg(target_arch = "x86_64")]
fn counted(top: &Path, body: impl FnOnce() -> i32) -> (Finished, StopCounts) {
    counted_with(super::super::redirect::TopLevel::new(top).unwrap(), body)
}

/// [`counted`] with the redirection given (names of `/` hidden from the step, say).
#[cfg(target_arch = "x86_64")]
fn counted_with(
    mut top_level: super::super::redirect::TopLevel,
    body: impl FnOnce() -> i32,
) -> (Finished, StopCounts) {
    use std::io::{Read, Seek};
    use std::os::fd::AsRawFd;
    let mut report = tempfile::tempfile().unwrap();
    top_level.stop_report = Some(report.as_raw_fd());
    let done = run_supervised_until(body, None, &[], OwnershipTable::default(), Some(&top_level))
        .expect("traced step");
    report.rewind().unwrap();
    let mut line = String::new();
    report.read_to_string(&mut line).unwrap();
    let field = |name: &str| -> u64 {
        line.split(' ')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in the tracer's report {line:?}"))
            .parse()
            .unwrap()
    };
    let stops = StopCounts {
        seccomp: field("seccomp"),
        syscall: field("syscall"),
        switched: field("switched") == 1,
    };
    (done, stops)
}

/// [`counted`] for `/bin/sh -c script`.
#[cfg(target_arch = "x86_64")]
fn sh_counted(top: &Path, script: &str) -> (Finished, StopCounts) {
    let args: Vec<std::ffi::CString> = ["/bin/sh", "-c", script]
        .iter()
        .map(|a| std::ffi::CString::new(*a).unwrap())
        .collect();
    let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    counted(top, || {
        // SAFETY: NUL-terminated arguments that outlive the call.
        unsafe { libc::execv(pointers[0], pointers.as_ptr()) };
        127
    })
}

/// A name of `/` the stage lacks, the builder image's own (an empty `/srv`, say): hidden
/// from the step (its `stat`, `open`, `chdir` find nothing; `mkdir` makes the stage's in
/// the redirection directory), so the step is traced at every path-taking call from its
/// start, never only at the creating ones. The stop counts of the same calls as
/// [`a_step_without_redirected_entries_stops_only_at_creating_calls`] are printed: that
/// is the price of a stage lacking one of the builder's names.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_name_of_slash_the_stage_lacks_is_absent_and_every_call_traced() {
    const CALLS: usize = 50;
    let hidden = ["srv", "mnt", "media", "opt"]
        .into_iter()
        .find(|name| Path::new("/").join(name).is_dir())
        .expect("one of /srv, /mnt, /media, /opt to hide");
    let seen: Vec<std::path::PathBuf> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| std::path::PathBuf::from(e.unwrap().file_name()))
        .filter(|name| name.as_os_str() != hidden)
        .collect();
    let hiding = |top: &Path| {
        super::super::redirect::TopLevel::new(top)
            .unwrap()
            .seeing(&seen, &[std::path::PathBuf::from(hidden)])
    };
    let top = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let log = out.path().join("log");
    let script = format!(
        "{{ test ! -e /{hidden} && ! ls /{hidden} 2>/dev/null && ! cd /{hidden} 2>/dev/null && \
         mkdir /{hidden} && echo x > /{hidden}/f && cat /{hidden}/f && cd /{hidden} && pwd; }} \
         > '{}' 2>&1",
        log.display()
    );
    let args: Vec<std::ffi::CString> = ["/bin/sh", "-c", &script]
        .iter()
        .map(|a| std::ffi::CString::new(*a).unwrap())
        .collect();
    let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    let (done, stops) = counted_with(hiding(top.path()), || {
        // SAFETY: NUL-terminated arguments that outlive the call.
        unsafe { libc::execv(pointers[0], pointers.as_ptr()) };
        127
    });
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(done.exit_code(), Some(0), "{said}");
    assert_eq!(said, format!("x\n/{hidden}\n"));
    assert_eq!(
        std::fs::read_to_string(top.path().join(hidden).join("f")).unwrap(),
        "x\n"
    );
    assert!(!Path::new("/").join(hidden).join("f").exists());
    assert!(!stops.switched, "traced from the start: {stops:?}");

    // Reads of a name the stage has: each stops now, none with only the creating calls
    // traced (no hidden name).
    let reads = || {
        let real = c"/etc/hostname";
        // SAFETY: plain syscalls with valid C strings and buffers.
        unsafe {
            for _ in 0..CALLS {
                if libc::access(real.as_ptr(), libc::F_OK) != 0 {
                    return 3;
                }
                let fd = libc::open(real.as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    return 4;
                }
                libc::close(fd);
            }
        }
        0
    };
    let empty = tempfile::tempdir().unwrap();
    let (done, hiding_stops) = counted_with(hiding(empty.path()), reads);
    assert_eq!(done.exit_code(), Some(0));
    let (done, creating_stops) = counted(empty.path(), reads);
    assert_eq!(done.exit_code(), Some(0));
    eprintln!(
        "{CALLS} access and {CALLS} open calls: {hiding_stops:?} with /{hidden} hidden, \
         {creating_stops:?} without"
    );
    assert_eq!(hiding_stops.seccomp, 2 * CALLS as u64, "{hiding_stops:?}");
    assert_eq!(creating_stops.seccomp, 0, "{creating_stops:?}");
}

/// A step of a stage with no redirected entry stops in the tracer only for the calls that
/// can create a name: reads, `stat`s and `access` of real paths and of paths to redirect
/// (which fail the same either way) make no stop, an `open` with `O_CREAT` of a real path
/// makes one seccomp stop and nothing more.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_step_without_redirected_entries_stops_only_at_creating_calls() {
    const CALLS: usize = 50;
    let top = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::ffi::OsStringExt;
    let created =
        std::ffi::CString::new(out.path().join("made").into_os_string().into_vec()).unwrap();
    let absent =
        std::ffi::CString::new(format!("/rbuild-absent-{}/f", std::process::id())).unwrap();
    let (done, stops) = counted(top.path(), || {
        let real = c"/etc/hostname";
        // SAFETY: plain syscalls with valid C strings and buffers.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            for _ in 0..CALLS {
                if libc::access(real.as_ptr(), libc::F_OK) != 0
                    || libc::stat(real.as_ptr(), &mut st) != 0
                {
                    return 3;
                }
                let fd = libc::open(real.as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    return 4;
                }
                libc::close(fd);
                let fd = libc::openat(libc::AT_FDCWD, real.as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    return 5;
                }
                libc::close(fd);
                if libc::open(absent.as_ptr(), libc::O_RDONLY) >= 0
                    || libc::access(absent.as_ptr(), libc::F_OK) == 0
                {
                    return 6;
                }
            }
            let fd = libc::open(created.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            if fd < 0 {
                return 7;
            }
            libc::close(fd);
        }
        0
    });
    assert_eq!(done.exit_code(), Some(0), "every call gave its answer");
    assert!(out.path().join("made").exists());
    assert_eq!(
        stops,
        StopCounts {
            seccomp: 1,
            syscall: 0,
            switched: false
        },
        "only the open with O_CREAT stopped, and redirected nothing"
    );
}

/// A step of a stage with no redirected entry makes one and uses it: from a process forked
/// before the entry existed (waiting on a FIFO), from processes started after, and with
/// `mkfifo` (a `mknod` the tracer redirects) as a new top-level entry.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_new_entry_is_seen_by_processes_forked_before_and_after_it() {
    let top = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let name = format!("rbuild-switch-{}", std::process::id());
    let real = NotInSlash(Path::new("/").join(&name));
    let fifo_entry = NotInSlash(Path::new("/").join(format!("{name}-fifo")));
    let o = out.path().display();
    let script = format!(
        "set -e
        mkfifo '{o}/go'
        (read line < '{o}/go'; cat /{name}/f > '{o}/before'; cd /{name}; pwd > '{o}/cwd') &
        mkdir /{name}
        echo hi > /{name}/f
        echo go > '{o}/go'
        wait $!
        cat /{name}/f > '{o}/after'
        mkfifo /{name}-fifo
        test -p /{name}-fifo
        ls /{name} > '{o}/ls'"
    );
    let (done, stops) = sh_counted(top.path(), &script);
    assert!(!real.0.exists(), "the real / got {}", real.0.display());
    assert!(
        !fifo_entry.0.exists(),
        "the real / got {}",
        fifo_entry.0.display()
    );
    assert_eq!(done.exit_code(), Some(0), "the traced script failed");
    let read = |f: &str| std::fs::read_to_string(out.path().join(f)).unwrap();
    assert_eq!(
        read("before"),
        "hi\n",
        "the child forked before the entry reads it"
    );
    assert_eq!(
        read("cwd"),
        format!("/{name}\n"),
        "and its getcwd shows /NAME"
    );
    assert_eq!(read("after"), "hi\n");
    assert_eq!(read("ls"), "f\n");
    assert_eq!(
        std::fs::read_to_string(top.path().join(&name).join("f")).unwrap(),
        "hi\n"
    );
    use std::os::unix::fs::FileTypeExt;
    let fifo = std::fs::symlink_metadata(top.path().join(format!("{name}-fifo"))).unwrap();
    assert!(
        fifo.file_type().is_fifo(),
        "mkfifo /NAME made a FIFO in the redirection directory"
    );
    assert!(stops.switched && stops.syscall > 0, "{stops:?}");
}

/// What the step's second thread is given: the pipe it waits on before reading the new
/// entry, the entry's path, and where it puts the bytes read (-1: its open failed).
#[cfg(target_arch = "x86_64")]
struct ThreadArgs {
    pipe: libc::c_int,
    path: *const libc::c_char,
    read: libc::ssize_t,
}

#[cfg(target_arch = "x86_64")]
extern "C" fn read_after_go(args: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `args` is the ThreadArgs the main thread passed, alive until it joins us.
    let args = unsafe { &mut *args.cast::<ThreadArgs>() };
    let mut byte = 0u8;
    let mut buf = [0u8; 16];
    // SAFETY: plain syscalls on our buffers and a valid C string.
    unsafe {
        if libc::read(args.pipe, (&mut byte as *mut u8).cast(), 1) != 1 {
            args.read = -2;
            return std::ptr::null_mut();
        }
        let fd = libc::open(args.path, libc::O_RDONLY);
        args.read = if fd < 0 {
            -1
        } else {
            libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
        };
    }
    std::ptr::null_mut()
}

/// A second thread, started before the step makes its first redirected entry and blocked
/// meanwhile, is traced in full after it: its `open` (no `O_CREAT`) is redirected.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_thread_started_before_a_new_entry_reads_it() {
    let top = tempfile::tempdir().unwrap();
    let name = format!("rbuild-thread-{}", std::process::id());
    let real = NotInSlash(Path::new("/").join(&name));
    let dir = std::ffi::CString::new(format!("/{name}")).unwrap();
    let file = std::ffi::CString::new(format!("/{name}/f")).unwrap();
    let (done, stops) = counted(top.path(), || {
        // SAFETY: plain syscalls and pthread calls with valid buffers; the thread's
        // arguments outlive it (joined before they go).
        unsafe {
            let mut pipe = [0; 2];
            if libc::pipe(pipe.as_mut_ptr()) != 0 {
                return 3;
            }
            let mut args = ThreadArgs {
                pipe: pipe[0],
                path: file.as_ptr(),
                read: 0,
            };
            let mut thread: libc::pthread_t = std::mem::zeroed();
            if libc::pthread_create(
                &mut thread,
                std::ptr::null(),
                read_after_go,
                (&mut args as *mut ThreadArgs).cast(),
            ) != 0
            {
                return 4;
            }
            if libc::mkdir(dir.as_ptr(), 0o755) != 0 {
                return 5;
            }
            let fd = libc::open(file.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            if fd < 0 || libc::write(fd, b"hello".as_ptr().cast(), 5) != 5 {
                return 6;
            }
            libc::close(fd);
            if libc::write(pipe[1], b"g".as_ptr().cast(), 1) != 1 {
                return 7;
            }
            libc::pthread_join(thread, std::ptr::null_mut());
            if args.read == 5 {
                0
            } else {
                10 + args.read.clamp(-2, 10) as i32
            }
        }
    });
    assert!(!real.0.exists(), "the real / got {}", real.0.display());
    assert_eq!(
        done.exit_code(),
        Some(0),
        "the second thread read the new entry (exit 9: its open failed)"
    );
    assert_eq!(
        std::fs::read_to_string(top.path().join(&name).join("f")).unwrap(),
        "hello"
    );
    assert!(stops.switched, "{stops:?}");
}

/// A device node made as a new top-level entry while the stage has none is refused (the
/// tracer does not see the supervisor's `mknod`, so the step's later calls on it would not
/// be redirected); under a new top-level directory it is made and recorded.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_device_as_the_first_new_entry_is_refused_and_below_one_made() {
    let top = tempfile::tempdir().unwrap();
    let name = format!("rbuild-dev-{}", std::process::id());
    let real = NotInSlash(Path::new("/").join(&name));
    let (refused, _) = sh_counted(top.path(), &format!("mknod /{name} c 1 3"));
    assert_ne!(
        refused.exit_code(),
        Some(0),
        "mknod of a top-level device refused"
    );
    assert!(!top.path().join(&name).exists() && !real.0.exists());
    let (done, stops) = sh_counted(
        top.path(),
        &format!("mkdir /{name} && mknod /{name}/null c 1 3 && test -e /{name}/null"),
    );
    assert_eq!(done.exit_code(), Some(0));
    assert!(stops.switched, "{stops:?}");
    let node = top.path().join(&name).join("null");
    assert_eq!(
        done.table
            .device_of(&node)
            .unwrap()
            .map(|d| (d.major, d.minor)),
        Some((1, 3))
    );
}

/// Runs `script` with /bin/sh under the filter, traced, with top-level names absent from
/// `/` redirected into `top`.
#[cfg(target_arch = "x86_64")]
fn sh_redirected(top: &Path, script: &str) -> Finished {
    let top_level = super::super::redirect::TopLevel::new(top).unwrap();
    sh_supervised(script, Some(&top_level))
}

/// `/bin/sh -c script` supervised as a restricted step, traced when `top` is given.
#[cfg(target_arch = "x86_64")]
fn sh_supervised(script: &str, top: Option<&super::super::redirect::TopLevel>) -> Finished {
    let args: Vec<std::ffi::CString> = ["/bin/sh", "-c", script]
        .iter()
        .map(|a| std::ffi::CString::new(*a).unwrap())
        .collect();
    let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    run_supervised_until(
        || {
            // SAFETY: NUL-terminated arguments that outlive the call.
            unsafe { libc::execv(pointers[0], pointers.as_ptr()) };
            127
        },
        None,
        &[],
        OwnershipTable::default(),
        top,
    )
    .expect("supervised shell")
}

/// Removes `/NAME` if a step made it there after all, so a failed run leaves nothing.
#[cfg(target_arch = "x86_64")]
struct NotInSlash(std::path::PathBuf);

#[cfg(target_arch = "x86_64")]
impl Drop for NotInSlash {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The stage had no redirected entry: the step starts tracing only the creating calls and
/// switches to tracing every call at its `mkdir /NAME`.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_name_absent_from_slash_is_redirected_and_shown_as_slash_name() {
    redirects_and_shows_slash_name(false);
}

/// The stage already has a redirected entry: every path-taking call is traced from the
/// start; the same script gives the same files.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_step_of_a_stage_with_redirected_entries_is_traced_from_its_start() {
    redirects_and_shows_slash_name(true);
}

#[cfg(target_arch = "x86_64")]
fn redirects_and_shows_slash_name(stage_has_entries: bool) {
    let top = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let name = format!("rbuild-redirect-{pid}-{}", u8::from(stage_has_entries));
    if stage_has_entries {
        std::fs::create_dir(top.path().join(format!("rbuild-existing-{pid}"))).unwrap();
    }
    let real = NotInSlash(Path::new("/").join(&name));
    let script = format!(
        "set -e
        mkdir /{name}
        echo hi > /{name}/f
        cd /{name}
        /bin/pwd -P > /{name}/pwd
        readlink /proc/self/cwd > /{name}/cwd
        cd /
        echo rel > {name}/rel
        ls /{name} > /{name}/ls
        mv /{name}/f /{name}/g
        touch /{name}/gone && rm /{name}/gone
        chown 7:8 /{name}/g
        stat -c '%u:%g %s' /{name}/g > /{name}/stat
        test -f /./../{name}/g
        mkdir -p /{name}/sub && cd /{name}/sub && touch ../up
        mkfifo /{name}/fifo && test -p /{name}/fifo"
    );
    let (done, stops) = sh_counted(top.path(), &script);
    let slash_got_it = real.0.exists();
    assert!(!slash_got_it, "the real / got {}", real.0.display());
    assert_eq!(done.exit_code(), Some(0), "the traced script failed");
    assert_eq!(
        stops.switched, !stage_has_entries,
        "tracing every call starts at the first redirection only when the stage had no \
         redirected entry: {stops:?}"
    );
    let moved = top.path().join(&name);
    let read = |f: &str| std::fs::read_to_string(moved.join(f)).unwrap();
    assert_eq!(read("g"), "hi\n");
    assert_eq!(read("pwd"), format!("/{name}\n"), "getcwd shows /NAME");
    assert_eq!(
        read("cwd"),
        format!("/{name}\n"),
        "/proc/self/cwd shows /NAME"
    );
    assert_eq!(read("rel"), "rel\n", "a relative path from / is redirected");
    assert_eq!(
        read("ls"),
        "cwd\nf\nls\npwd\nrel\n",
        "ls lists the redirected directory"
    );
    assert_eq!(
        read("stat"),
        "7:8 3\n",
        "stat of a redirected path shows its owner"
    );
    assert!(!moved.join("gone").exists() && !moved.join("f").exists());
    assert!(
        moved.join("up").exists(),
        "`..` below a redirected entry stays in it"
    );
    assert_eq!(
        done.table.owner_of(&moved.join("g")).unwrap(),
        Some(Owner { uid: 7, gid: 8 }),
        "the chown is recorded for the redirected file"
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn real_names_of_slash_are_not_redirected() {
    let top = tempfile::tempdir().unwrap();
    // `/etc` exists: a path below it is the real one, even when the redirection
    // directory has an `etc` of its own.
    std::fs::create_dir(top.path().join("etc")).unwrap();
    std::fs::write(top.path().join("etc/hostname"), "decoy\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "cat /etc/hostname > '{0}/seen' && cd / && cat etc/hostname >> '{0}/seen'",
        out.path().display()
    );
    let done = sh_redirected(top.path(), &script);
    assert_eq!(done.exit_code(), Some(0));
    let real = std::fs::read_to_string("/etc/hostname").unwrap();
    assert_eq!(
        std::fs::read_to_string(out.path().join("seen")).unwrap(),
        format!("{real}{real}")
    );
}

/// Redirection changes nothing for paths under real names of `/`: a step reading many
/// files gives the same output traced and untraced. Prints the times unsupervised,
/// supervised without the tracer, with only the creating calls traced (a stage with no
/// redirected entry) and with every path-taking call traced (the tracer's own cost is the
/// difference from the second, the supervisor's `stat` answers being in all three:
/// `cargo test --release … -- --nocapture`).
#[test]
#[cfg(target_arch = "x86_64")]
fn real_paths_read_the_same_traced_and_their_cost_is_printed() {
    // No redirected entry: only the creating calls stop (the output's open, here).
    let top = tempfile::tempdir().unwrap();
    let top_level = super::super::redirect::TopLevel::new(top.path()).unwrap();
    // A redirected entry: every path-taking call stops.
    let full_top = tempfile::tempdir().unwrap();
    std::fs::create_dir(full_top.path().join("existing")).unwrap();
    let full_top_level = super::super::redirect::TopLevel::new(full_top.path()).unwrap();
    let script = "find /usr/share/doc -type f -print0 | xargs -0 cat | wc -c";
    let out = tempfile::tempdir().unwrap();
    #[derive(Clone, Copy, Debug)]
    enum Mode {
        Plain,
        Supervised,
        CreatingTraced,
        Traced,
    }
    let run = |mode: Mode| {
        let file = out.path().join(format!("{mode:?}"));
        let script = format!("({script}) > '{}'", file.display());
        let started = std::time::Instant::now();
        let done = match mode {
            Mode::Plain => run_command(&["/bin/sh", "-c", &script]).unwrap(),
            Mode::Supervised => sh_supervised(&script, None),
            Mode::CreatingTraced => sh_supervised(&script, Some(&top_level)),
            Mode::Traced => sh_supervised(&script, Some(&full_top_level)),
        };
        let took = started.elapsed();
        assert_eq!(done.exit_code(), Some(0), "{mode:?}");
        (std::fs::read_to_string(file).unwrap(), took)
    };
    // Once before, so that every timed run finds the files in the page cache.
    run(Mode::Plain);
    let (plain, plain_took) = run(Mode::Plain);
    let (supervised, supervised_took) = run(Mode::Supervised);
    let (creating, creating_took) = run(Mode::CreatingTraced);
    let (traced, traced_took) = run(Mode::Traced);
    assert_eq!(plain, supervised);
    assert_eq!(plain, creating);
    assert_eq!(plain, traced);
    let files = std::process::Command::new("sh")
        .args(["-c", "find /usr/share/doc -type f | wc -l"])
        .output()
        .unwrap();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "{} files, {} bytes: unsupervised {:.1} ms, supervised untraced {:.1} ms, \
         supervised with only creating calls traced {:.1} ms, supervised traced {:.1} ms",
        String::from_utf8_lossy(&files.stdout).trim(),
        plain.trim(),
        ms(plain_took),
        ms(supervised_took),
        ms(creating_took),
        ms(traced_took)
    );
}

/// A path argument the tracer cannot read (a hostile or buggy step) is the kernel's to
/// refuse: the call fails with EFAULT and the step goes on, the tracer does not end it.
#[test]
#[cfg(target_arch = "x86_64")]
fn an_unreadable_path_fails_with_efault_and_the_step_goes_on() {
    let top = tempfile::tempdir().unwrap();
    let top_level = super::super::redirect::TopLevel::new(top.path()).unwrap();
    let done = run_supervised_until(
        || {
            // An address no process maps (the first page is never mapped).
            let bad = 16usize as *const libc::c_char;
            // SAFETY: the kernel only reads the path; an unmapped one is its EFAULT.
            let opened = unsafe { libc::open(bad, libc::O_RDONLY) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            if opened == -1 && errno == Some(libc::EFAULT) {
                0
            } else {
                3
            }
        },
        None,
        &[],
        OwnershipTable::default(),
        Some(&top_level),
    )
    .expect("traced step");
    assert_eq!(
        done.exit_code(),
        Some(0),
        "open of an unmapped path: EFAULT"
    );
}

/// The cost of one stop, printed per call (`cargo test --release … one_traced_call --
/// --nocapture`): `access` (traced when redirection is on and the stage has a redirected
/// entry, else run by the kernel alone) and `newfstatat` (answered by the supervisor
/// either way), in a supervised step without the tracer, with only the creating calls
/// traced and with every path-taking call traced. Every call must succeed in all three.
#[test]
#[cfg(target_arch = "x86_64")]
fn one_traced_call_costs_one_stop_and_is_printed() {
    const CALLS: u32 = 20_000;
    let top = tempfile::tempdir().unwrap();
    let top_level = super::super::redirect::TopLevel::new(top.path()).unwrap();
    let timed = |top: Option<&super::super::redirect::TopLevel>| {
        let mut report = tempfile::tempfile().unwrap();
        use std::os::fd::AsRawFd;
        let fd = report.as_raw_fd();
        let done = run_supervised_until(
            || {
                let path = c"/etc/hostname";
                let started = std::time::Instant::now();
                for _ in 0..CALLS {
                    // SAFETY: a valid C string.
                    if unsafe { libc::access(path.as_ptr(), libc::F_OK) } != 0 {
                        return 3;
                    }
                }
                let access = started.elapsed();
                // SAFETY: an all-zero stat is valid; the kernel or supervisor fills it.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                let started = std::time::Instant::now();
                for _ in 0..CALLS {
                    // SAFETY: a valid C string and stat buffer.
                    if unsafe { libc::fstatat(libc::AT_FDCWD, path.as_ptr(), &mut st, 0) } != 0 {
                        return 4;
                    }
                }
                let stat = started.elapsed();
                let line = format!("{} {}", access.as_nanos(), stat.as_nanos());
                // SAFETY: writes a buffer of that length to a descriptor of ours.
                let wrote = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
                if wrote == line.len() as isize {
                    0
                } else {
                    5
                }
            },
            None,
            &[],
            OwnershipTable::default(),
            top,
        )
        .expect("supervised step");
        assert_eq!(done.exit_code(), Some(0), "every call succeeded");
        use std::io::{Read, Seek};
        report.rewind().unwrap();
        let mut line = String::new();
        report.read_to_string(&mut line).unwrap();
        let per_call: Vec<f64> = line
            .split(' ')
            .map(|ns| ns.parse::<f64>().unwrap() / f64::from(CALLS) / 1e3)
            .collect();
        (per_call[0], per_call[1])
    };
    // A stage with a redirected entry: every path-taking call stops.
    let full_top = tempfile::tempdir().unwrap();
    std::fs::create_dir(full_top.path().join("existing")).unwrap();
    let full_top_level = super::super::redirect::TopLevel::new(full_top.path()).unwrap();
    let (access_untraced, stat_untraced) = timed(None);
    let (access_creating, stat_creating) = timed(Some(&top_level));
    let (access_traced, stat_traced) = timed(Some(&full_top_level));
    eprintln!(
        "per call: access {access_untraced:.2} µs untraced, {access_creating:.2} µs with \
         only creating calls traced (no redirected entry), {access_traced:.2} µs traced; \
         newfstatat (supervisor) {stat_untraced:.2} µs untraced, {stat_creating:.2} µs, \
         {stat_traced:.2} µs"
    );
}

/// Where `process_vm_readv`/`writev` are refused (a restricted pod under Docker 20.10's
/// profile), the supervisor and the tracer keep `/proc/TID/mem` descriptors from one call
/// to the next (`memory.rs`). Short-lived processes (vfork children that exec, forked
/// shells) and threads each chown and stat files: every path read must be the caller's and
/// every result land in the caller, never in a process that had its tid or its address
/// space before (a stale descriptor gives another process's bytes or none: a wrong or a
/// missing owner below).
#[test]
#[cfg(target_arch = "x86_64")]
fn kept_memory_descriptors_answer_each_of_many_processes_and_threads() {
    super::super::remote::refuse_for_tests();
    let top = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "cd '{}' || exit 99\n: > f && chown 1234:5678 f && exec python3 - <<'EOF'\n{}\nEOF\n",
        dir.path().display(),
        r#"
import os, subprocess, threading
bad = []
def owner(path):
    s = os.stat(path)
    return f"{s.st_uid}:{s.st_gid}"
for i in range(40):
    # subprocess execs through vfork where it can: the child shares this address space
    # until its exec.
    open(f"g{i}", "w").close()
    subprocess.run(["chown", f"{i}:{i + 1}", f"g{i}"], check=True)
    out = subprocess.run(["stat", "-c", "%u:%g", "f"], capture_output=True, text=True).stdout
    if out.strip() != "1234:5678": bad.append(("child", i, out))
    out = subprocess.run(f"stat -c %u:%g g{i}", shell=True, capture_output=True, text=True).stdout
    if out.strip() != f"{i}:{i + 1}": bad.append(("shell", i, out))
    if owner(f"g{i}") != f"{i}:{i + 1}": bad.append(("parent", i, owner(f"g{i}")))
def worker(n):
    for i in range(300):
        if owner("f") != "1234:5678": bad.append(("thread", n, i))
threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
open("result", "w").write(repr(bad))
"#
    );
    let top_level = super::super::redirect::TopLevel::new(top.path()).unwrap();
    let done = sh_supervised(&script, Some(&top_level));
    assert_eq!(done.exit_code(), Some(0));
    let result = std::fs::read_to_string(dir.path().join("result")).unwrap();
    assert_eq!(result, "[]");
}

/// A step's `fsync` family succeeds without the kernel forcing anything to disk
/// (`filter::NOT_FORCED`), as on the other isolations' volatile overlay: the data written
/// is there all the same, and a descriptor that is not open gets success too, which only
/// the filter's answer gives (the kernel's is EBADF).
#[test]
fn a_steps_fsync_is_answered_without_forcing_data_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let done = sh(
        dir.path(),
        "python3 -c 'import os\n\
         fd = os.open(\"f\", os.O_WRONLY | os.O_CREAT, 0o644)\n\
         os.write(fd, b\"kept\")\n\
         os.fsync(fd); os.fdatasync(fd); os.sync()\n\
         os.close(fd)\n\
         os.fsync(999)\n\
         open(\"answered\", \"w\").write(\"yes\")'",
    );
    assert_eq!(done.exit_code(), Some(0));
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"kept");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("answered")).unwrap(),
        "yes",
        "fsync of a closed descriptor is the filter's success"
    );
}
