//! The local content-addressed store: an OCI image layout with atomic writes and locking.
