//! Tests of `layout.rs`: on a stand-in `/` (a temporary directory), never the real one.

use super::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn mount_points_are_read_with_their_escapes() {
    let text = "22 1 0:21 / / rw - overlay overlay rw\n\
                23 22 0:22 / /proc rw - proc proc rw\n\
                24 22 8:1 /x /etc/hosts rw - ext4 /dev/sda1 rw\n\
                25 22 8:1 /y /my\\040dir rw - ext4 /dev/sda1 rw\n";
    assert_eq!(mount_points(text), vec!["/proc", "/etc/hosts", "/my dir"]);
    let maps = "7f00-7f01 r-xp 00000000 08:01 12 /lib/x86_64-linux-gnu/libc.so.6\n\
                7f02-7f03 rw-p 00000000 00:00 0 \n\
                7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n";
    assert_eq!(
        mapped_files(maps).into_iter().collect::<Vec<_>>(),
        vec!["/lib/x86_64-linux-gnu/libc.so.6"]
    );
    assert_eq!(relative(Path::new("/")), None);
    assert_eq!(relative(Path::new("/a/../b")), None);
    assert_eq!(relative(Path::new("/etc/hosts")), Some("etc/hosts".into()));
}

/// A stand-in `/` (a temporary directory, never the real one): laying a stage out and
/// taking it back moves only the region, keeps inodes, and leaves excluded paths alone.
#[test]
fn lay_out_and_take_back_move_only_the_stages_region() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top");
    let stage = dir.path().join("stage");
    let stash = dir.path().join("stash");
    for d in [&top, &stage, &stash] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::write(top.join("etc/hosts"), "runtime hosts").unwrap();
    fs::write(top.join("etc/builder"), "builder's").unwrap();
    fs::create_dir_all(top.join("rbuild/state")).unwrap();
    fs::write(top.join("rbuild/state/canary"), "store").unwrap();
    fs::create_dir_all(top.join("home")).unwrap();
    fs::create_dir_all(top.join("bin")).unwrap();
    fs::write(top.join("bin/builders-tool"), "tool").unwrap();
    fs::write(top.join("canary"), "a file directly in /").unwrap();
    fs::create_dir_all(stage.join("etc")).unwrap();
    fs::write(stage.join("etc/hosts"), "image hosts").unwrap();
    fs::write(stage.join("etc/passwd"), "root").unwrap();
    fs::create_dir_all(stage.join("bin")).unwrap();
    fs::write(stage.join("bin/sh"), "sh").unwrap();
    fs::create_dir_all(stage.join("rbuild")).unwrap();
    let passwd_ino = fs::metadata(stage.join("etc/passwd")).unwrap().ino();

    let root = InPlaceRoot::new(
        &top,
        vec!["/etc/hosts".into(), "/rbuild".into(), "/missing".into()],
    )
    .unwrap();
    root.lay_out(&stage, &stash).unwrap();
    assert_eq!(
        fs::read_to_string(top.join("etc/hosts")).unwrap(),
        "runtime hosts"
    );
    assert_eq!(fs::read_to_string(top.join("bin/sh")).unwrap(), "sh");
    assert!(!top.join("etc/builder").exists() && !top.join("bin/builders-tool").exists());
    assert!(top.join("home").is_dir() && top.join("canary").is_file());
    assert_eq!(
        fs::read_to_string(top.join("rbuild/state/canary")).unwrap(),
        "store"
    );
    assert_eq!(
        fs::metadata(top.join("etc/passwd")).unwrap().ino(),
        passwd_ino
    );
    let walked = root.walk().unwrap();
    let names: Vec<_> = walked.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(names, vec!["bin", "bin/sh", "etc", "etc/passwd", "home"]);

    // A step's changes come back with the stage.
    fs::write(top.join("etc/new"), "new").unwrap();
    fs::remove_file(top.join("bin/sh")).unwrap();
    root.take_back(&stage, &stash).unwrap();
    assert_eq!(fs::read_to_string(stage.join("etc/new")).unwrap(), "new");
    assert!(!stage.join("bin/sh").exists());
    assert_eq!(
        fs::read_to_string(stage.join("etc/hosts")).unwrap(),
        "image hosts"
    );
    assert_eq!(
        fs::read_to_string(top.join("etc/builder")).unwrap(),
        "builder's"
    );
    assert_eq!(
        fs::read_to_string(top.join("bin/builders-tool")).unwrap(),
        "tool"
    );
    assert!(!top.join("bin/sh").exists() && !top.join("etc/new").exists());
    assert!(root.region(&stash).unwrap().is_empty());

    // A stage with a top-level entry the builder lacks, or a file where `/` has one, is
    // refused before anything moves.
    fs::create_dir_all(stage.join("opt")).unwrap();
    let err = root.lay_out(&stage, &stash).unwrap_err();
    assert!(matches!(err, LayoutError::Undone(_)), "{err}");
    let err = err.to_string();
    assert!(err.contains("/opt, which the builder image lacks"), "{err}");
    assert_eq!(
        fs::read_to_string(top.join("bin/builders-tool")).unwrap(),
        "tool"
    );
    fs::remove_dir(stage.join("opt")).unwrap();
    fs::write(stage.join("canary"), "").unwrap();
    let err = root.lay_out(&stage, &stash).unwrap_err().to_string();
    assert!(err.contains("not a"), "{err}");
    fs::remove_file(stage.join("canary")).unwrap();

    // A working directory in an excluded path is refused.
    assert!(root.cwd_refusal("/rbuild/x", &stage).is_some());
    assert!(root.cwd_refusal("/etc", &stage).is_none());
    assert!(root.cwd_refusal("/", &stage).is_none());

    // Mount targets never resolve into excluded paths, directly or through a symlink.
    assert!(root.check_mount_target("/etc/passwd").is_ok());
    assert!(root.check_mount_target("/home/new/deep").is_ok());
    let err = root.check_mount_target("/rbuild/state/x").unwrap_err();
    assert!(matches!(err, InPlaceError::Refused(_)), "{err}");
    let err = err.to_string();
    assert!(err.contains("/rbuild"), "{err}");
    assert!(root.check_mount_target("/etc/hosts").is_err());
    std::os::unix::fs::symlink(top.join("rbuild/state"), top.join("home/link")).unwrap();
    let err = root
        .check_mount_target("/home/link/blobs")
        .unwrap_err()
        .to_string();
    assert!(err.contains("leads to") && err.contains("/rbuild"), "{err}");
    fs::remove_file(top.join("home/link")).unwrap();

    // A top-level symlink the same in both (usrmerge) is the builder's; another is not.
    std::os::unix::fs::symlink("usr/lib", top.join("lib")).unwrap();
    let root = InPlaceRoot::new(&top, vec!["/etc/hosts".into(), "/rbuild".into()]).unwrap();
    std::os::unix::fs::symlink("usr/lib", stage.join("lib")).unwrap();
    root.lay_out(&stage, &stash).unwrap();
    root.take_back(&stage, &stash).unwrap();
    assert_eq!(
        fs::read_link(stage.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    fs::remove_file(stage.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", stage.join("lib")).unwrap();
    let err = root.lay_out(&stage, &stash).unwrap_err().to_string();
    assert!(err.contains("nor the same symlink"), "{err}");
    assert!(err.contains("rbuild:restricted-debian"), "{err}");

    // A busybox-style stage (`/lib` a directory) on a usrmerge builder, and a usrmerge stage
    // (`/usr` a symlink, say) where the builder has a directory: refused, naming which
    // builder image fits, with nothing moved.
    fs::remove_file(stage.join("lib")).unwrap();
    fs::create_dir(stage.join("lib")).unwrap();
    fs::write(stage.join("lib/libc.so"), "stage's").unwrap();
    let err = root.lay_out(&stage, &stash).unwrap_err().to_string();
    assert!(
        err.contains("/lib") && err.contains("rbuild:restricted"),
        "{err}"
    );
    assert_eq!(fs::read(stage.join("lib/libc.so")).unwrap(), b"stage's");
    fs::remove_dir_all(stage.join("lib")).unwrap();
    fs::create_dir_all(top.join("usr")).unwrap();
    let root = InPlaceRoot::new(&top, vec!["/etc/hosts".into(), "/rbuild".into()]).unwrap();
    fs::remove_dir_all(stage.join("usr")).ok();
    std::os::unix::fs::symlink("opt", stage.join("usr")).unwrap();
    let err = root.lay_out(&stage, &stash).unwrap_err().to_string();
    assert!(
        err.contains("/usr is not a directory") && err.contains("usrmerge"),
        "{err}"
    );
    assert_eq!(fs::read_link(stage.join("usr")).unwrap(), Path::new("opt"));
    assert!(
        fs::read_link(top.join("lib")).is_ok(),
        "the builder's /lib stays"
    );
}

/// A stage's top-level entries the builder lacks go to the redirection directory and come
/// back; the walk names them as the stage does.
#[test]
fn top_level_entries_the_builder_lacks_are_laid_out_in_the_redirection_directory() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top");
    let stage = dir.path().join("stage");
    let stash = dir.path().join("stash");
    for d in [&top, &stage, &stash] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(top.join("rbuild/top")).unwrap();
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::create_dir_all(stage.join("etc")).unwrap();
    fs::create_dir_all(stage.join("newtop/sub")).unwrap();
    fs::write(stage.join("newtop/sub/f"), "f").unwrap();
    fs::write(stage.join("y"), "y").unwrap();
    let ino = fs::metadata(stage.join("newtop/sub/f")).unwrap().ino();
    let root = InPlaceRoot::new(&top, vec!["/rbuild".into()])
        .unwrap()
        .with_redirect("rbuild/top".into());
    assert_eq!(root.redirect(), Some(top.join("rbuild/top")));

    root.lay_out(&stage, &stash).unwrap();
    assert_eq!(
        fs::metadata(top.join("rbuild/top/newtop/sub/f"))
            .unwrap()
            .ino(),
        ino,
        "moved by rename"
    );
    assert!(top.join("rbuild/top/y").is_file() && !top.join("y").exists());
    assert_eq!(
        root.located(Path::new("newtop/sub")),
        top.join("rbuild/top/newtop/sub")
    );
    assert_eq!(root.located(Path::new("etc/x")), top.join("etc/x"));
    assert_eq!(
        root.real_path("/newtop/cache"),
        top.join("rbuild/top/newtop/cache").display().to_string()
    );
    let walked = root.walk().unwrap();
    let names: Vec<_> = walked.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        vec!["etc", "newtop", "newtop/sub", "newtop/sub/f", "y"]
    );

    // A step's new top-level entry (made through the redirection) comes back too.
    fs::write(top.join("rbuild/top/z"), "z").unwrap();
    root.take_back(&stage, &stash).unwrap();
    assert_eq!(fs::read_to_string(stage.join("z")).unwrap(), "z");
    assert_eq!(fs::read_to_string(stage.join("newtop/sub/f")).unwrap(), "f");
    assert_eq!(fs::read_dir(top.join("rbuild/top")).unwrap().count(), 0);

    // Leftovers in the redirection directory, or a name `/` has written there directly,
    // are refused naming them.
    fs::write(top.join("rbuild/top/leftover"), "").unwrap();
    let err = root.lay_out(&stage, &stash).unwrap_err().to_string();
    assert!(err.contains("is not empty"), "{err}");
    fs::remove_file(top.join("rbuild/top/leftover")).unwrap();
    root.lay_out(&stage, &stash).unwrap();
    fs::create_dir(top.join("rbuild/top/etc")).unwrap();
    let err = root.walk().unwrap_err().to_string();
    assert!(err.contains("a name `/` has for the stage"), "{err}");
    fs::remove_dir(top.join("rbuild/top/etc")).unwrap();
    root.take_back(&stage, &stash).unwrap();

    // Without a redirection directory such a stage is refused, naming the way out.
    let plain = InPlaceRoot::new(&top, vec!["/rbuild".into()]).unwrap();
    let err = plain.lay_out(&stage, &stash).unwrap_err().to_string();
    assert!(err.contains("/rbuild/top"), "{err}");
}

/// A name of `/` the stage lacks (the builder image's empty `/srv`, a volume's mount point)
/// is not the stage's: the step is told to redirect it, the builder's entry stays where it
/// is, unwalked, and what the step makes under that name is the stage's.
#[test]
fn names_of_slash_the_stage_lacks_are_redirected_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top");
    let stage = dir.path().join("stage");
    let stash = dir.path().join("stash");
    for d in [&top, &stage, &stash] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(top.join("rbuild/top")).unwrap();
    fs::create_dir_all(top.join("rbuild/state")).unwrap();
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::create_dir_all(top.join("srv")).unwrap();
    fs::write(top.join("srv/builders"), "builder's").unwrap();
    fs::create_dir_all(top.join("workspace")).unwrap();
    fs::write(top.join("workspace/context"), "a volume").unwrap();
    // The directory the runtime made for a secret mounted below it (the bench's pod).
    fs::create_dir_all(top.join("rbuild-secrets")).unwrap();
    fs::write(top.join("rbuild-secrets/ca"), "a secret").unwrap();
    fs::create_dir_all(stage.join("etc")).unwrap();
    fs::create_dir_all(stage.join("workspace")).unwrap();
    fs::write(stage.join("workspace/f"), "stage's").unwrap();
    let excluded = vec![
        "/rbuild".into(),
        "/workspace".into(),
        "/rbuild-secrets/ca".into(),
    ];
    let root = InPlaceRoot::new(&top, excluded)
        .unwrap()
        .with_redirect("rbuild/top".into());
    assert!(
        root.cwd_refusal("/workspace/x", &stage).is_none(),
        "the stage's /workspace is redirected, not the volume"
    );

    let names = root.lay_out(&stage, &stash).unwrap().unwrap();
    let text = |v: &[PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(text(&names.seen), vec!["etc", "rbuild"]);
    assert_eq!(
        text(&names.builder_hidden),
        vec!["srv"],
        "the volume and the secret's directory are the runtime's"
    );
    assert_eq!(
        fs::read_to_string(top.join("srv/builders")).unwrap(),
        "builder's",
        "the builder's own entry the stage lacks is not stashed"
    );
    assert_eq!(
        fs::read_to_string(top.join("workspace/context")).unwrap(),
        "a volume"
    );
    assert_eq!(
        fs::read_to_string(top.join("rbuild/top/workspace/f")).unwrap(),
        "stage's"
    );
    assert_eq!(
        root.located(Path::new("srv/x")),
        top.join("rbuild/top/srv/x")
    );
    let walked = root.walk().unwrap();
    let walked: Vec<_> = walked.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(walked, vec!["etc", "workspace", "workspace/f"]);
    assert!(root.check_mount_target("/srv/cache").is_ok());
    std::os::unix::fs::symlink(
        top.join("rbuild/state"),
        top.join("rbuild/top/workspace/link"),
    )
    .unwrap();
    let err = root
        .check_mount_target("/workspace/link/x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/rbuild"), "{err}");
    fs::remove_file(top.join("rbuild/top/workspace/link")).unwrap();

    // The step's `mkdir /srv` (redirected) is the stage's /srv.
    fs::create_dir(top.join("rbuild/top/srv")).unwrap();
    fs::write(top.join("rbuild/top/srv/made"), "made").unwrap();
    let after: Vec<_> = root
        .walk()
        .unwrap()
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        after,
        vec!["etc", "srv", "srv/made", "workspace", "workspace/f"]
    );
    root.take_back(&stage, &stash).unwrap();
    assert_eq!(fs::read_to_string(stage.join("srv/made")).unwrap(), "made");
    assert_eq!(
        fs::read_to_string(top.join("srv/builders")).unwrap(),
        "builder's"
    );
    assert_eq!(fs::read_dir(top.join("rbuild/top")).unwrap().count(), 0);

    // From then on the stage has /srv: the builder's directory holds it.
    let names = root.lay_out(&stage, &stash).unwrap().unwrap();
    assert_eq!(text(&names.seen), vec!["etc", "rbuild", "srv"]);
    assert!(names.builder_hidden.is_empty());
    assert_eq!(fs::read_to_string(top.join("srv/made")).unwrap(), "made");
    assert!(!top.join("srv/builders").exists(), "stashed");
    root.take_back(&stage, &stash).unwrap();
    assert_eq!(
        fs::read_to_string(top.join("srv/builders")).unwrap(),
        "builder's"
    );
    assert_eq!(fs::read_to_string(stage.join("srv/made")).unwrap(), "made");
}
