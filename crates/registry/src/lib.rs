//! A Docker Registry v2 / OCI distribution client: auth, pull, push, mounts, retries.
