//! Running a test's body in a child process with a capped address space, so that a test of
//! a memory bound fails (the child's allocation fails and it aborts) instead of exhausting
//! the CI machine when the bound regresses.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Set in the child to the name of the test it must run.
const CHILD_ENV: &str = "RBUILD_TEST_MEMORY_LIMITED";

/// Returns true in the child, where the caller runs the test's body; in the parent, runs
/// the test `test_name` (its full path for `--exact`, e.g. `bounds::doubling`) from this
/// test binary in a child limited to `limit_bytes` of address space (`RLIMIT_AS`), asserts
/// that it passed, and returns false.
///
/// ```ignore
/// #[test]
/// fn doubling_is_refused() {
///     if rbuild_testutil::memory_limited("doubling_is_refused", 1 << 30) {
///         /* the body, run under the limit */
///     }
/// }
/// ```
pub fn memory_limited(test_name: &str, limit_bytes: u64) -> bool {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test_name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe);
    child
        .args([test_name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, test_name);
    let limit = limit_bytes as libc::rlim_t;
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, on a stack value; it allocates nothing.
    unsafe {
        child.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = child.output().expect("running the test in a child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{test_name} failed under a {limit_bytes}-byte address-space limit ({}):\n\
         stdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child did not run {test_name} (wrong test name?):\n{stdout}"
    );
    false
}
