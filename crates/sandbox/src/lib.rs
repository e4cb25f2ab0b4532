//! Running a command against a root filesystem without privilege: user namespaces, chroot fallback.
