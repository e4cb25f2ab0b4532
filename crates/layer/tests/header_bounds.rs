//! Tar header bounds (docs/security.md): a GNU long name, long link or PAX header over
//! 1 MiB is refused with an error naming it, before the `tar` crate buffers it. Each test
//! runs in a child process with a capped address space, so a regression is a failed test
//! rather than an exhausted machine.

use std::io::Read;

use rbuild_layer::{apply_layer, list_entries, ApplyOptions, Ownership, MAX_SPECIAL_ENTRY_BYTES};

const CHILD_MEMORY: u64 = 1 << 30;

/// A special member's header claiming `size` bytes, followed by as many zero bytes as
/// asked for (never materialised: the data is generated as it is read).
fn special_member(kind: tar::EntryType, size: u64) -> impl Read {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_size(size);
    header.set_cksum();
    std::io::Cursor::new(header.as_bytes().to_vec()).chain(std::io::repeat(b'a').take(size))
}

fn options() -> ApplyOptions {
    ApplyOptions {
        ownership: Ownership::Ignore,
        ..Default::default()
    }
}

#[test]
fn a_huge_gnu_long_name_is_refused_without_buffering_it() {
    if !rbuild_testutil::memory_limited(
        "a_huge_gnu_long_name_is_refused_without_buffering_it",
        CHILD_MEMORY,
    ) {
        return;
    }
    let target = tempfile::tempdir().unwrap();
    // 8 GiB claimed and sent: buffering it would blow the 1 GiB address-space limit.
    for (kind, what) in [
        (tar::EntryType::GNULongName, "GNU long name"),
        (tar::EntryType::GNULongLink, "GNU long link name"),
    ] {
        let err = apply_layer(special_member(kind, 8 << 30), target.path(), &options())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "a {what} of 8589934592 bytes is larger than the limit of {MAX_SPECIAL_ENTRY_BYTES} bytes"
            )),
            "{err}"
        );
    }
    // The reported case: 6 MiB, listed rather than applied.
    let err = list_entries(special_member(tar::EntryType::GNULongName, 6 << 20))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("6291456 bytes is larger than the limit"),
        "{err}"
    );
}

#[test]
fn a_huge_pax_header_is_refused_without_buffering_it() {
    if !rbuild_testutil::memory_limited(
        "a_huge_pax_header_is_refused_without_buffering_it",
        CHILD_MEMORY,
    ) {
        return;
    }
    let target = tempfile::tempdir().unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_path("PaxHeaders.0/x").unwrap();
    header.set_size(8 << 30);
    header.set_cksum();
    let layer =
        std::io::Cursor::new(header.as_bytes().to_vec()).chain(std::io::repeat(b'9').take(8 << 30));
    let err = apply_layer(layer, target.path(), &options())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PaxHeaders.0/x") && err.contains("PAX extended header of 8589934592 bytes"),
        "{err}"
    );
}

#[test]
fn long_names_and_pax_records_within_the_limit_still_apply() {
    let target = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    // A 200-component path: a GNU long name of about 1 KiB.
    let dir = "d/".repeat(200);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(5);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, format!("{dir}file"), &b"hello"[..])
        .unwrap();
    let layer = builder.into_inner().unwrap();
    apply_layer(&layer[..], target.path(), &options()).unwrap();
    assert_eq!(
        std::fs::read(target.path().join(format!("{dir}file"))).unwrap(),
        b"hello"
    );
}
