//! The `restricted` isolation's in-place runner (no namespace, no chroot, no capability):
//! on this host as root, and inside `docker run --user 1000:1000 --cap-drop ALL
//! --security-opt no-new-privileges` (Docker's default seccomp profile, Kubernetes'
//! restricted level) on a private dockerd, as 1000:1000 and as OpenShift's random uid with
//! gid 0. Needs root (CI runs it as root), busybox-static, docker.io and ldd (libc-bin).
//!
//! This binary is also the sandbox helper and the container's
//! entrypoint: with `--inside-restricted-container` it runs the same checks in there and
//! prints `INSIDE-OK`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use rbuild_sandbox::restricted::{
    Device, DeviceKind, Owner, OwnershipTable, Protected, POD_CREDENTIALS,
};
use rbuild_sandbox::test_support::{busybox_rootfs, require_root, run_tests};
use rbuild_sandbox::{Isolation, Rootfs, Sandbox, SandboxError, StepOutcome, StepSpec};

/// A flag (not a test-name filter for `run_tests`).
const INSIDE_ARG: &str = "--inside-restricted-container";

/// The checks that hold both on the host and in the restricted container.
const CHECKS: &[(&str, fn())] = &[
    (
        "owners_devices_and_modes_come_back_in_the_table",
        owners_devices_and_modes_come_back_in_the_table,
    ),
    (
        "leftover_processes_are_killed_even_outside_the_group",
        leftover_processes_are_killed_even_outside_the_group,
    ),
    (
        "orphans_are_reaped_while_the_step_runs",
        orphans_are_reaped_while_the_step_runs,
    ),
    (
        "landlock_keeps_the_step_from_rbuilds_files",
        landlock_keeps_the_step_from_rbuilds_files,
    ),
    (
        "mount_unshare_and_chroot_fail_as_under_docker",
        mount_unshare_and_chroot_fail_as_under_docker,
    ),
    (
        "what_cannot_be_emulated_is_refused_up_front",
        what_cannot_be_emulated_is_refused_up_front,
    ),
    (
        "overhead_of_a_step_and_of_chown",
        overhead_of_a_step_and_of_chown,
    ),
    (
        "rbuild_killed_mid_step_kills_the_whole_step",
        rbuild_killed_mid_step_kills_the_whole_step,
    ),
    (
        "restricted_copies_up_only_the_written_name_of_a_shared_file",
        restricted_copies_up_only_the_written_name_of_a_shared_file,
    ),
    (
        "restricted_copies_up_nothing_outside_the_stages_names",
        restricted_copies_up_nothing_outside_the_stages_names,
    ),
    (
        "a_new_top_level_name_by_each_creating_command_is_redirected",
        a_new_top_level_name_by_each_creating_command_is_redirected,
    ),
];

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    rbuild_sandbox::test_support::maybe_run_driver();
    if std::env::args().nth(1).as_deref() == Some(INSIDE_ARG) {
        // In the container: every check, then a marker the host looks for.
        let code = run_tests(CHECKS);
        if code == ExitCode::SUCCESS {
            println!("INSIDE-OK");
        }
        return code;
    }
    // On the host the checks run as root (CI's user), each saying so if not.
    let mut tests: Vec<(&str, fn())> = CHECKS.to_vec();
    tests.push((
        "in_a_restricted_container_as_1000_and_as_a_random_uid_with_gid_0",
        in_a_restricted_container_as_1000_and_as_a_random_uid_with_gid_0,
    ));
    run_tests(&tests)
}

/// Fails clearly on the host unless root; in the container anything goes.
fn host_or_inside() {
    if std::env::args().nth(1).as_deref() != Some(INSIDE_ARG) {
        require_root();
    }
}

/// A restricted step in place (`/` is the step's root) running `script` with `sh` in `cwd`.
fn step(cwd: &Path, script: &str) -> StepSpec {
    let mut spec = StepSpec::new(
        Rootfs::Dir("/".into()),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.cwd = cwd.to_string_lossy().into_owned();
    spec.isolation = Isolation::Restricted;
    spec
}

fn run(sandbox: &Sandbox, spec: &StepSpec) -> (StepOutcome, String) {
    let mut output = Vec::new();
    let outcome = sandbox
        .run(spec, &mut |_, bytes| output.extend_from_slice(bytes))
        .unwrap_or_else(|e| panic!("the restricted step could not run: {e}"));
    (outcome, String::from_utf8_lossy(&output).into_owned())
}

fn table(outcome: &StepOutcome) -> &OwnershipTable {
    outcome
        .ownership
        .as_ref()
        .expect("a restricted step returns its ownership table")
}

fn owners_devices_and_modes_come_back_in_the_table() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("tree")).unwrap();
    std::fs::write(work.join("tree/inner"), b"x").unwrap();
    let disk_before = std::fs::metadata(work).unwrap();
    let script = "touch f && chown 123:456 f && mknod d c 1 3 && chmod u+s f \
                  && chown -R 7:8 tree && touch g && chmod u+s g && chown 5:5 g \
                  && cp /bin/busybox ping && /usr/sbin/setcap cap_net_raw+p ping \
                  && id -u && id -g";
    let (outcome, output) = run(&Sandbox::new(), &step(work, script));
    assert_eq!(outcome.status.code, Some(0), "{output}");
    assert_eq!(output, "0\n0\n", "the step sees itself as root");
    assert_eq!(outcome.isolation, Isolation::Restricted);
    let table = table(&outcome);
    assert_eq!(
        table.owner_of(&work.join("f")).unwrap(),
        Some(Owner { uid: 123, gid: 456 })
    );
    for entry in ["tree", "tree/inner"] {
        assert_eq!(
            table.owner_of(&work.join(entry)).unwrap(),
            Some(Owner { uid: 7, gid: 8 }),
            "{entry}"
        );
    }
    let device = table.device_of(&work.join("d")).unwrap();
    assert!(
        matches!(
            device,
            Some(Device {
                kind: DeviceKind::Char,
                major: 1,
                minor: 3,
                ..
            })
        ),
        "{device:?}"
    );
    assert_eq!(table.len(), 6, "{table:?}");
    let capability = table.capability_of(&work.join("ping")).unwrap();
    assert!(
        matches!(&capability, Some(Some(value)) if value.len() >= 20),
        "setcap's file capability: {capability:?}"
    );
    // The disk: the build user's ids (chown was not done), the setuid bit set for real.
    let f = std::fs::metadata(work.join("f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (disk_before.uid(), disk_before.gid()));
    assert_ne!(f.mode() & 0o4000, 0, "chmod u+s reached the disk");
    assert!(std::fs::metadata(work.join("d")).unwrap().is_file());
    // A chown after the chmod clears the bit, as the kernel's chown does (root's too).
    let g = std::fs::metadata(work.join("g")).unwrap();
    assert_eq!(g.mode() & 0o4000, 0, "chown cleared setuid");
}

/// Hard-link groups from before a restricted step (`copy_up_inodes`), with no tracer, with
/// the tracer stopping only the creating calls, and with it stopping every path call: a
/// write-open, a chmod, a chown, a truncate and a touch of one name each give that name a
/// new inode with the change, and leave the other name the old inode as it was, as
/// overlayfs's copy-up does (in a directory of mode 0555 too); a read copies nothing. The
/// step's table records the chown on the copy alone, and which inode each copy came from
/// (for the stage's owners).
fn restricted_copies_up_only_the_written_name_of_a_shared_file() {
    host_or_inside();
    let old_time = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for tracing in [
        "no tracer",
        "creating calls traced",
        "every path call traced",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let top = dir.path().join("top");
        std::fs::create_dir(&work).unwrap();
        std::fs::create_dir(&top).unwrap();
        if tracing == "every path call traced" {
            // A redirected entry: every path call stops in the tracer from the start.
            std::fs::create_dir(top.join("an-entry-the-builder-lacks")).unwrap();
        }
        let mut inodes = Vec::new();
        for group in ["w", "c", "o", "t", "u", "r"] {
            let first = work.join(format!("{group}-1"));
            std::fs::write(&first, format!("{group}\n")).unwrap();
            std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o751)).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&first)
                .unwrap()
                .set_modified(old_time)
                .unwrap();
            std::fs::hard_link(&first, work.join(format!("{group}-2"))).unwrap();
            inodes.push(std::fs::metadata(&first).unwrap().ino());
        }
        // One more in a directory its owner may not write (mode 0555): overlayfs copies up
        // whatever the directory's mode, so the copy-up adds the owner's bit meanwhile.
        let closed = work.join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::write(closed.join("x-1"), "x\n").unwrap();
        std::fs::set_permissions(closed.join("x-1"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        std::fs::hard_link(closed.join("x-1"), closed.join("x-2")).unwrap();
        let closed_inode = std::fs::metadata(closed.join("x-1")).unwrap().ino();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o555)).unwrap();
        inodes.push(closed_inode);
        // On the host (root's test, whose step has no capability): one more in a
        // directory of another user's, where no copy can be made: the call fails with
        // the copy-up's EACCES rather than change both names.
        let foreign = work.join("foreign");
        let on_host = std::env::args().nth(1).as_deref() != Some(INSIDE_ARG);
        if on_host {
            std::fs::create_dir(&foreign).unwrap();
            std::fs::write(foreign.join("y-1"), "y\n").unwrap();
            std::fs::set_permissions(foreign.join("y-1"), std::fs::Permissions::from_mode(0o751))
                .unwrap();
            std::fs::hard_link(foreign.join("y-1"), foreign.join("y-2")).unwrap();
            inodes.push(std::fs::metadata(foreign.join("y-1")).unwrap().ino());
            std::os::unix::fs::chown(&foreign, Some(4321), Some(4321)).unwrap();
        }
        let sandbox = match tracing {
            "no tracer" => Sandbox::new(),
            _ => Sandbox::new().with_protected(Protected {
                hidden: Vec::new(),
                read_only: Vec::new(),
                top_level: Some(top.clone()),
            }),
        };
        let mut spec = step(
            &work,
            "set -e; echo more >> w-1; busybox chmod 600 c-1; busybox chown 5:6 o-1; \
             busybox truncate -s 1 t-1; busybox touch -c u-1; cat r-1 r-2 >/dev/null; \
             busybox chmod 600 closed/x-1; \
             if [ -d foreign ]; then busybox chmod 600 foreign/y-1 2>&1 || echo refused; fi; \
             echo done",
        );
        spec.copy_up_inodes = inodes.clone();
        let (outcome, output) = run(&sandbox, &spec);
        assert_eq!(outcome.status.code, Some(0), "{tracing}: {output}");
        assert!(output.contains("done"), "{tracing}: {output}");
        let meta = |name: &str| std::fs::metadata(work.join(name)).unwrap();
        let copies: Vec<(u64, u64)> = table(&outcome)
            .copies()
            .map(|(new, old)| (new.1, old.1))
            .collect();
        for (group, old) in ["w", "c", "o", "t", "u"].iter().zip(&inodes) {
            let (written, other) = (meta(&format!("{group}-1")), meta(&format!("{group}-2")));
            assert_eq!(
                other.ino(),
                *old,
                "{tracing}, {group}: the other name keeps it"
            );
            assert_ne!(
                written.ino(),
                *old,
                "{tracing}, {group}: the name copied up"
            );
            assert_eq!(
                (written.nlink(), other.nlink()),
                (1, 1),
                "{tracing}, {group}"
            );
            assert_eq!(
                (
                    other.mode() & 0o7777,
                    other.len(),
                    other.modified().unwrap()
                ),
                (0o751, 2, old_time),
                "{tracing}, {group}: the old inode as it was"
            );
            assert!(
                copies.contains(&(written.ino(), *old)),
                "{tracing}, {group}: the copy-up recorded: {copies:?}"
            );
        }
        let closed_meta = std::fs::metadata(&closed).unwrap();
        assert_eq!(
            closed_meta.mode() & 0o7777,
            0o555,
            "{tracing}: its mode put back"
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (x1, x2) = (meta("closed/x-1"), meta("closed/x-2"));
        assert_eq!(
            (x1.mode() & 0o7777, x2.mode() & 0o7777, x2.ino()),
            (0o600, 0o751, closed_inode),
            "{tracing}: a name in a directory of mode 0555"
        );
        assert!(
            copies.contains(&(x1.ino(), closed_inode)),
            "{tracing}: {copies:?}"
        );
        assert_eq!(copies.len(), 6, "{tracing}: {copies:?}");
        if on_host {
            assert!(
                output.contains("Permission denied") && output.contains("refused"),
                "{tracing}: {output}"
            );
            let (y1, y2) = (meta("foreign/y-1"), meta("foreign/y-2"));
            assert_eq!(
                (y1.ino(), y1.mode() & 0o7777, y2.mode() & 0o7777),
                (y2.ino(), 0o751, 0o751),
                "{tracing}: neither name changed"
            );
        }
        assert_eq!(
            std::fs::read_to_string(work.join("w-1")).unwrap(),
            "w\nmore\n"
        );
        assert_eq!(meta("c-1").mode() & 0o7777, 0o600, "{tracing}");
        assert_eq!(meta("t-1").len(), 1, "{tracing}");
        assert_ne!(meta("u-1").modified().unwrap(), old_time, "{tracing}");
        assert_eq!(meta("r-1").ino(), meta("r-2").ino(), "{tracing}: a read");
        let table = table(&outcome);
        assert_eq!(
            table.owner_of(&work.join("o-1")).unwrap(),
            Some(Owner { uid: 5, gid: 6 }),
            "{tracing}"
        );
        assert_eq!(
            table.owner_of(&work.join("o-2")).unwrap(),
            None,
            "{tracing}"
        );
    }
}

/// The copy-up (by the tracer or the supervisor, before the kernel applies the step's
/// Landlock rules) renames only below the stage's top-level names and the redirection
/// directory: a name of a hard-link group in rbuild's own directory (here `aside`, hidden
/// as rbuild's store is) or under a name of `/` that is not the stage's (here `kept`, below
/// the redirection directory's own first component, as `/rbuild/…` is) is left to the
/// kernel, which refuses the first and changes the shared inode of the second.
fn restricted_copies_up_nothing_outside_the_stages_names() {
    host_or_inside();
    for tracing in [
        "no tracer",
        "creating calls traced",
        "every path call traced",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (top, aside, kept) = (
            dir.path().join("top"),
            dir.path().join("aside"),
            dir.path().join("kept"),
        );
        for d in [&top, &aside, &kept] {
            std::fs::create_dir(d).unwrap();
        }
        let group = |first: &Path, second: &Path| -> u64 {
            std::fs::write(first, "old\n").unwrap();
            std::fs::set_permissions(first, std::fs::Permissions::from_mode(0o751)).unwrap();
            std::fs::hard_link(first, second).unwrap();
            std::fs::metadata(first).unwrap().ino()
        };
        // The stage's name and one put aside in rbuild's directory share an inode.
        let put_aside = group(&kept.join("g-1"), &aside.join("g-2"));
        // Both names outside the stage's.
        let outside = group(&kept.join("k-1"), &kept.join("k-2"));
        let mut inodes = vec![put_aside, outside];
        let entry = top.join("an-entry");
        if tracing == "every path call traced" {
            // A redirected entry of the stage: its names are copied up as before.
            std::fs::create_dir(&entry).unwrap();
            inodes.push(group(&entry.join("a-1"), &entry.join("a-2")));
        }
        let traced = tracing != "no tracer";
        let sandbox = Sandbox::new().with_protected(Protected {
            hidden: vec![aside.clone()],
            read_only: Vec::new(),
            top_level: traced.then(|| top.clone()),
        });
        let mut spec = step(
            dir.path(),
            "for call in 'echo x >> aside/g-2' 'busybox chown 5:6 aside/g-2' \
             'busybox truncate -s 0 aside/g-2'; do \
               sh -c \"$call\" 2>/dev/null && echo \"ran: $call\" || echo refused; done; \
             echo more >> kept/k-2; busybox chmod 600 kept/k-1; \
             if [ -e top/an-entry ]; then echo more >> /an-entry/a-1; fi; echo done",
        );
        spec.copy_up_inodes = inodes.clone();
        if traced {
            // Every name of `/` is the stage's but the one the redirection directory is
            // below (as `/rbuild` is), which its own first component never is.
            let seen = std::fs::read_dir("/")
                .unwrap()
                .map(|e| PathBuf::from(e.unwrap().file_name()))
                .collect();
            spec.top_level_names = Some(rbuild_sandbox::TopLevelNames {
                seen,
                builder_hidden: Vec::new(),
            });
        }
        let (outcome, output) = run(&sandbox, &spec);
        assert_eq!(outcome.status.code, Some(0), "{tracing}: {output}");
        assert_eq!(
            output.matches("refused").count(),
            3,
            "{tracing}: Landlock refuses every change in rbuild's directory: {output}"
        );
        assert!(output.contains("done"), "{tracing}: {output}");
        let copies: Vec<(u64, u64)> = table(&outcome)
            .copies()
            .map(|(new, old)| (new.1, old.1))
            .collect();
        assert!(
            copies.iter().all(|(_, old)| *old != put_aside),
            "{tracing}: nothing copied up in rbuild's directory: {copies:?}"
        );
        let names: Vec<_> = std::fs::read_dir(&aside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["g-2"],
            "{tracing}: nothing created or renamed there"
        );
        let meta = |path: &Path| std::fs::metadata(path).unwrap();
        let (g1, g2) = (meta(&kept.join("g-1")), meta(&aside.join("g-2")));
        assert_eq!(
            (g1.ino(), g2.ino(), g2.nlink(), g2.mode() & 0o7777, g2.len()),
            (put_aside, put_aside, 2, 0o751, 4),
            "{tracing}: the put-aside name unchanged"
        );
        let (k1, k2) = (meta(&kept.join("k-1")), meta(&kept.join("k-2")));
        if traced {
            // Left to the kernel: the one inode changed under both names.
            assert_eq!(
                (k1.ino(), k2.ino(), k1.mode() & 0o7777, k1.len()),
                (outside, outside, 0o600, 9),
                "{tracing}: a name outside the stage's is not copied up"
            );
            assert!(
                copies.iter().all(|(_, old)| *old != outside),
                "{tracing}: {copies:?}"
            );
        } else {
            // Without redirection every name of `/` but Landlock's is the stage's.
            assert_ne!(k1.ino(), k2.ino(), "{tracing}: copied up");
        }
        if tracing == "every path call traced" {
            let (a1, a2) = (meta(&entry.join("a-1")), meta(&entry.join("a-2")));
            assert_ne!(a1.ino(), a2.ino(), "{tracing}: a redirected name copied up");
            assert_eq!((a1.len(), a2.len()), (9, 4), "{tracing}");
            assert!(
                copies.contains(&(a1.ino(), inodes[2])),
                "{tracing}: {copies:?}"
            );
        }
    }
}

/// Whether `pid` is gone (or a zombie on its way out).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/status", pid.trim())) {
        Err(_) => true,
        Ok(status) => status.contains("State:\tZ"),
    }
}

fn leftover_processes_are_killed_even_outside_the_group() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // One in the step's process group, one in a session of its own whose parent exited
    // (re-parented to the helper, the subreaper), both far outliving the step.
    let script = "sleep 600 & echo $! > in-group; \
                  sh -c 'setsid sleep 601 & echo $! > own-session'; exit 0";
    let started = Instant::now();
    let (outcome, output) = run(&Sandbox::new(), &step(work, script));
    assert_eq!(outcome.status.code, Some(0), "{output}");
    assert!(started.elapsed() < Duration::from_secs(60));
    for name in ["in-group", "own-session"] {
        let pid = std::fs::read_to_string(work.join(name)).unwrap();
        assert!(!pid.trim().is_empty(), "{name}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(&pid) {
            assert!(
                Instant::now() < deadline,
                "{name} ({}) survived its step",
                pid.trim()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn orphans_are_reaped_while_the_step_runs() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // 30 short-lived orphans (double forks), then a count of the zombies whose parent is
    // the step's parent (the helper, their subreaper) while the step still runs.
    let script = "for i in $(seq 30); do (sh -c 'exit 0' &); done; sleep 1; \
                  zombies=0; for status in /proc/[0-9]*/status; do \
                  grep -q '^State:.Z' $status 2>/dev/null && \
                  grep -qx \"PPid:.$PPID\" $status && zombies=$((zombies+1)); done; \
                  echo zombies=$zombies";
    let (outcome, output) = run(&Sandbox::new(), &step(work, script));
    assert_eq!(outcome.status.code, Some(0), "{output}");
    assert!(output.contains("zombies=0"), "{output}");
}

fn landlock_keeps_the_step_from_rbuilds_files() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(store.join("blobs")).unwrap();
    std::fs::write(store.join("canary"), "rbuild's store\n").unwrap();
    std::os::unix::fs::symlink("canary", store.join("link")).unwrap();
    let canary_before = std::fs::metadata(store.join("canary")).unwrap();
    let link_before = std::fs::symlink_metadata(store.join("link")).unwrap();
    let binary = std::fs::canonicalize("/proc/self/exe").unwrap();
    let bin_dir = binary.parent().unwrap();
    let sandbox = Sandbox::new().with_protected(Protected {
        hidden: vec![store.clone()],
        read_only: Vec::new(),
        top_level: None,
    });
    // A file beside the helper binary, as rbuild's own would be (the running binary
    // itself cannot be opened for writing by anyone: ETXTBSY).
    let beside = bin_dir.join(format!("restricted-canary-{}", std::process::id()));
    // Another top-level tree than the work dir's (/tmp).
    let elsewhere = tempfile::tempdir_in("/home").unwrap();
    std::fs::write(&beside, "rbuild's binary\n").unwrap();
    // Each attempt runs in a subshell and prints its exit code (its complaint, on stderr,
    // is dropped); the work dir stays writable.
    let script = format!(
        "(cat {store}/canary) 2>/dev/null; echo read=$?; (echo x > {store}/blobs/planted) 2>/dev/null; echo plant=$?; \
         (rm -f {store}/canary) 2>/dev/null; echo remove=$?; (echo x >> {beside}) 2>/dev/null; echo binary=$?; \
         (touch {bin}/planted) 2>/dev/null; echo bin=$?; (test -x {binary}) 2>/dev/null; echo exec=$?; \
         (cat {beside}) 2>/dev/null; echo read-bin=$?; \
         (echo moved > tomove && mv tomove {elsewhere}/moved) 2>/dev/null; echo move=$?; \
         (kill -0 {rbuild}) 2>/dev/null; echo signal=$?; \
         (cat /proc/{rbuild}/environ) 2>/dev/null; echo environ=$?; \
         (mknod {store}/blobs/dev c 1 3) 2>/dev/null; echo mknod=$?; \
         (chown 0:0 {store}/canary) 2>/dev/null; echo chown=$?; (echo ok > written) 2>/dev/null; echo work=$?; \
         (chmod 600 {store}/canary) 2>/dev/null; echo chmod=$?; \
         (touch -d @1000000000 {store}/canary) 2>/dev/null; echo touch=$?; \
         (ln -s {store}/canary to-store && chmod 600 to-store) 2>/dev/null; echo chmod-through-link=$?; \
         (touch -h -d @1000000000 {store}/link) 2>/dev/null; echo touch-link=$?; \
         (echo x > mine && chmod 4711 mine && touch -d @1000000000 mine) 2>/dev/null; echo own=$?; \
         (ln -s mine my-link && touch -h -d @1200000000 my-link) 2>/dev/null; echo own-link=$?",
        store = store.display(),
        elsewhere = elsewhere.path().display(),
        rbuild = std::process::id(),
        beside = beside.display(),
        binary = binary.display(),
        bin = bin_dir.display()
    );
    let (outcome, output) = run(&sandbox, &step(&work, &script));
    let _ = std::fs::remove_file(bin_dir.join("planted"));
    let beside_after = std::fs::read_to_string(&beside);
    let _ = std::fs::remove_file(&beside);
    assert_eq!(outcome.status.code, Some(0), "{output}");
    let code = |name: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in:\n{output}"))
            .to_string()
    };
    // mknod and chown are answered by the supervisor, outside the step's Landlock domain:
    // it refuses them there too.
    // Nor may it signal rbuild or read its environment (Landlock's signal scoping and its
    // ptrace rule), though both run as the same uid.
    // So are a mode or times change by name, which Landlock has no right for: through a
    // symlink of the step's too.
    for refused in [
        "read",
        "plant",
        "remove",
        "binary",
        "bin",
        "mknod",
        "chown",
        "signal",
        "environ",
        "chmod",
        "touch",
        "chmod-through-link",
        "touch-link",
    ] {
        assert_ne!(code(refused), "0", "{refused}:\n{output}");
    }
    // A rename from one top-level tree to another (pip's /tmp to /usr/local) works; the
    // step's own files take a mode and times (a symlink's own with `-h`).
    for allowed in ["exec", "read-bin", "work", "move", "own", "own-link"] {
        assert_eq!(code(allowed), "0", "{allowed}:\n{output}");
    }
    let canary_after = std::fs::metadata(store.join("canary")).unwrap();
    assert_eq!(canary_after.mode(), canary_before.mode());
    assert_eq!(canary_after.mtime(), canary_before.mtime());
    assert_eq!(canary_after.mtime_nsec(), canary_before.mtime_nsec());
    let link_after = std::fs::symlink_metadata(store.join("link")).unwrap();
    assert_eq!(link_after.mtime(), link_before.mtime());
    let mine = std::fs::metadata(work.join("mine")).unwrap();
    assert_eq!(mine.mode() & 0o7777, 0o4711);
    assert_eq!(mine.mtime(), 1_000_000_000);
    let my_link = std::fs::symlink_metadata(work.join("my-link")).unwrap();
    assert!(my_link.file_type().is_symlink());
    assert_eq!(my_link.mtime(), 1_200_000_000);
    assert!(!output.contains("rbuild's store"), "{output}");
    assert_eq!(beside_after.unwrap(), "rbuild's binary\n");
    assert_eq!(
        std::fs::read_to_string(elsewhere.path().join("moved")).unwrap(),
        "moved\n"
    );
    // The pod's service account token (the container image has a stand-in), hidden with no
    // `Protected` entry of its own.
    if std::env::args().nth(1).as_deref() == Some(INSIDE_ARG) {
        let token = format!("{}/serviceaccount/token", POD_CREDENTIALS[0]);
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "pod-token\n");
        let (outcome, output) = run(&Sandbox::new(), &step(&work, &format!("cat {token}")));
        assert_ne!(outcome.status.code, Some(0), "{output}");
        assert!(!output.contains("pod-token"), "{output}");
    }
    // A working directory in rbuild's store is neither created there nor entered.
    let in_store = step(&store.join("blobs/new-workdir"), "touch ran");
    let err = sandbox
        .run(&in_store, &mut |_, _| {})
        .expect_err("a working directory in the store");
    assert!(
        err.to_string().contains("rbuild keeps from its steps"),
        "{err}"
    );
    assert!(!store.join("blobs/new-workdir").exists());
    assert_eq!(
        std::fs::read_to_string(store.join("canary")).unwrap(),
        "rbuild's store\n"
    );
    assert!(!store.join("blobs/planted").exists());
    assert!(!store.join("blobs/dev").exists());
    assert!(table(&outcome).is_empty(), "{:?}", table(&outcome));
    assert!(!bin_dir.join("planted").exists());
    assert_eq!(
        std::fs::read_to_string(work.join("written")).unwrap(),
        "ok\n"
    );
}

fn mount_unshare_and_chroot_fail_as_under_docker() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("mnt")).unwrap();
    let script = "mount -t tmpfs none mnt 2>&1; echo mount=$?; unshare -U true 2>&1; \
                  echo unshare=$?; chroot / true 2>&1; echo chroot=$?; exit 1";
    let (outcome, output) = run(&Sandbox::new(), &step(work, script));
    assert_eq!(outcome.status.code, Some(1), "{output}");
    for failed in ["mount=0", "unshare=0", "chroot=0"] {
        assert!(!output.contains(failed), "{failed} in:\n{output}");
    }
    assert!(output.contains("mount="), "{output}");
    assert!(output.contains("Operation not permitted"), "{output}");
    let hint = outcome.failure_hint().unwrap_or_default();
    assert!(hint.contains("isolation `restricted`"), "{hint}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&work.join("mnt").display().to_string()),
        "a step mounted: {mounts}"
    );
}

fn what_cannot_be_emulated_is_refused_up_front() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let sandbox = Sandbox::new();
    let unavailable = |spec: &StepSpec| match sandbox.run(spec, &mut |_, _| {}) {
        Err(SandboxError::Unavailable(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut as_user = step(work, "touch ran");
    as_user.user.uid = 1000;
    as_user.user.gid = 1000;
    let why = unavailable(&as_user);
    assert!(
        why.contains("cannot run a step as user 1000:1000") && why.contains("permissions"),
        "{why}"
    );
    // Root with another group runs (root's permissions do not depend on groups).
    let mut root_with_group = step(work, "touch ran-as-root-with-group");
    root_with_group.user.gid = 10;
    root_with_group.user.groups = vec![1, 10];
    let (outcome, output) = run(&sandbox, &root_with_group);
    assert_eq!(outcome.status.code, Some(0), "{output}");
    assert!(work.join("ran-as-root-with-group").exists());
    let mut elsewhere = step(work, "touch ran");
    elsewhere.rootfs = Rootfs::Dir(work.to_path_buf());
    assert!(unavailable(&elsewhere).contains("in place"));
    let mut mounted = step(work, "touch ran");
    mounted.binds.push(rbuild_sandbox::BindMount {
        source: work.to_path_buf(),
        target: "/mnt".into(),
        readonly: true,
        remove_source: false,
        tmpfs_size: None,
    });
    assert!(unavailable(&mounted).contains("cannot mount"));
    assert!(!work.join("ran").exists(), "a refused step ran");
}

/// rbuild (here a driver process running the step) killed outright while the step runs:
/// the helper (parent-death signal SIGTERM) kills the step's command, what it started in
/// the background, and what left its process group, before it goes.
fn rbuild_killed_mid_step_kills_the_whole_step() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let spec = step(
        work,
        "sleep 603 & echo $! > in-group; setsid sleep 604 & echo $! > own-session; \
         echo $$ > main; echo started; sleep 605",
    );
    let mut driver = Command::new("/proc/self/exe")
        .args([
            rbuild_sandbox::test_support::DRIVER_ARG,
            &serde_json::to_string(&spec).unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = driver.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("started") {
        use std::io::Read;
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            let _ = driver.kill();
            panic!("the driver ended first: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let pids: Vec<String> = ["in-group", "own-session", "main"]
        .iter()
        .map(|name| std::fs::read_to_string(work.join(name)).unwrap())
        .collect();
    assert!(
        pids.iter().all(|pid| !gone(pid)),
        "{pids:?} before the kill"
    );
    driver.kill().unwrap();
    driver.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in &pids {
        while !gone(pid) {
            assert!(Instant::now() < deadline, "{} outlived rbuild", pid.trim());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Prints what a restricted `true` step costs (helper, filter, Landlock rules, supervisor,
/// reaping) and what a supervised chown costs, from a walk of 1000 files with and without a
/// chown of each; asserts the table got every one.
fn overhead_of_a_step_and_of_chown() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let files = 1000;
    std::fs::create_dir(work.join("tree")).unwrap();
    for i in 0..files {
        std::fs::write(work.join(format!("tree/{i}")), b"").unwrap();
    }
    let sandbox = Sandbox::new();
    let timed = |script: &str| {
        let started = Instant::now();
        let (outcome, output) = run(&sandbox, &step(work, script));
        assert_eq!(outcome.status.code, Some(0), "{output}");
        (started.elapsed(), outcome)
    };
    timed("true");
    let rounds = 10;
    let per_step = (0..rounds).map(|_| timed("true").0).sum::<Duration>() / rounds;
    let (walk, _) = timed("find tree -exec true {} +");
    let (chown, outcome) = timed("find tree -exec chown 1:2 {} +");
    assert_eq!(table(&outcome).len(), files + 1, "every file and the tree");
    let per_chown = chown.saturating_sub(walk) / (files as u32 + 1);
    println!(
        "  restricted RUN true: {:.1} ms per step; chown: {:.1} us each \
         ({files} files: {:.0} ms with chown, {:.0} ms walk only)",
        per_step.as_secs_f64() * 1000.0,
        per_chown.as_secs_f64() * 1e6,
        chown.as_secs_f64() * 1000.0,
        walk.as_secs_f64() * 1000.0
    );
    assert!(per_step < Duration::from_secs(1), "{per_step:?}");
}

const IMAGE: &str = "rbuild-sandbox-restricted:test";

/// Where the test binary sits in the image (its directory is read-only to steps).
const IN_IMAGE: &str = "/rbuild-test/restricted";

/// The shared libraries `binary` loads, from ldd.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd (libc-bin)");
    assert!(out.status.success(), "ldd {}", binary.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let libraries: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    assert!(
        libraries
            .iter()
            .any(|l| l.to_string_lossy().contains("ld-")),
        "no dynamic loader in:\n{text}"
    );
    libraries
}

/// An image whose `/` and everything in it is owned by uid 1000 and group 0, directories
/// group-writable (what rbuild's builder image must look like): busybox, this binary and
/// its libraries.
fn restricted_image(daemon: &rbuild_testutil::Dockerd) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    busybox_rootfs(root);
    for applet in ["mknod", "setsid", "mount", "unshare", "chroot"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    // A stand-in for the service account token kubelet mounts into every pod.
    let token = root.join(POD_CREDENTIALS[0].trim_start_matches('/'));
    std::fs::create_dir_all(token.join("serviceaccount")).unwrap();
    std::fs::write(token.join("serviceaccount/token"), "pod-token\n").unwrap();
    let binary = std::fs::canonicalize("/proc/self/exe").unwrap();
    let target = root.join(IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&binary, &target).unwrap();
    // setcap (libcap2-bin) at its own path, for the file capability check.
    let setcap = Path::new("/usr/sbin/setcap");
    let at = root.join("usr/sbin/setcap");
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(setcap, &at).expect("setcap (Debian package libcap2-bin)");
    for library in shared_libraries(&binary)
        .into_iter()
        .chain(shared_libraries(setcap))
    {
        let real = std::fs::canonicalize(&library).unwrap();
        let at = root.join(library.strip_prefix("/").unwrap());
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::copy(&real, &at).unwrap();
    }
    let status = Command::new("chown")
        .args(["-R", "1000:0"])
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("chmod")
        .args(["-R", "g+rwX,o+rX"])
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    daemon.import_rootfs(root, IMAGE);
}

fn in_a_restricted_container_as_1000_and_as_a_random_uid_with_gid_0() {
    require_root();
    let daemon = rbuild_testutil::Dockerd::start();
    restricted_image(&daemon);
    for user in ["1000:1000", "1000770000:0"] {
        let run = daemon.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            user,
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--entrypoint",
            IN_IMAGE,
            IMAGE,
            INSIDE_ARG,
        ]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success() && stdout.contains("INSIDE-OK"),
            "as {user}: {}\nstdout:\n{stdout}\nstderr:\n{}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
        // Every check ran in there, not a filtered subset.
        assert!(
            stdout.contains(&format!("{} passed; 0 failed", CHECKS.len())),
            "{stdout}"
        );
        println!("inside, as {user}:\n{stdout}");
    }
}

/// A step of a stage with no redirected entry (its creating calls stopped in the tracer,
/// which checks their paths) makes a new top-level name as its first redirection with
/// each creating command (`mkdir`, a shell's `>`, `touch`, `mv`, `ln`, `ln -s`, `mkfifo`;
/// absolute and relative to a cwd of `/`): the name lands in the redirection directory and
/// the step finds it at `/NAME`. In the container `/` is the runtime's and Landlock's, so
/// a redirection missed would fail the step with EACCES; on the host (root) it would make
/// `/NAME`, which the test checks is absent.
fn a_new_top_level_name_by_each_creating_command_is_redirected() {
    host_or_inside();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("source"), "x\n").unwrap();
    let source = work.join("source");
    let source = source.display();
    for (how, command) in [
        ("mkdir", "busybox mkdir /NAME".to_string()),
        ("mkdir-relative", "cd / && busybox mkdir NAME".to_string()),
        ("redirect", "echo x > /NAME".to_string()),
        ("redirect-relative", "cd / && echo x > NAME".to_string()),
        ("touch", "busybox touch /NAME".to_string()),
        (
            "mv",
            format!("busybox cp {source} {source}.2 && busybox mv {source}.2 /NAME"),
        ),
        ("ln", format!("busybox ln {source} /NAME")),
        ("ln-relative", format!("cd / && busybox ln {source} NAME")),
        ("ln-s", "busybox ln -s target /NAME".to_string()),
        ("mkfifo", "busybox mkfifo /NAME".to_string()),
    ] {
        let top = dir.path().join(format!("top-{how}"));
        std::fs::create_dir(&top).unwrap();
        let name = format!("rbuild-new-{}-{how}", std::process::id());
        let real = Path::new("/").join(&name);
        let sandbox = Sandbox::new().with_protected(Protected {
            hidden: Vec::new(),
            read_only: Vec::new(),
            top_level: Some(top.clone()),
        });
        let command = command.replace("NAME", &name);
        let spec = step(
            &work,
            &format!("set -e; {command}; busybox ls -ld /{name} >/dev/null; echo done"),
        );
        let (outcome, output) = run(&sandbox, &spec);
        let made_in_slash = std::fs::symlink_metadata(&real).is_ok();
        if made_in_slash {
            let _ = std::fs::remove_dir(&real);
            let _ = std::fs::remove_file(&real);
        }
        assert!(!made_in_slash, "{how}: the real / got {}", real.display());
        assert_eq!(outcome.status.code, Some(0), "{how}: {output}");
        assert!(output.contains("done"), "{how}: {output}");
        assert!(
            std::fs::symlink_metadata(top.join(&name)).is_ok(),
            "{how}: made in the redirection directory"
        );
    }
}
