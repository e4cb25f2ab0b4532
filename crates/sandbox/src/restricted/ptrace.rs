//! Whether this process may trace its own children and sees their syscalls before seccomp
//! refuses them: what PRoot-style path translation (the alternative design) would need.

use crate::sys::{fork, waitpid};

/// `struct ptrace_syscall_info` (linux/ptrace.h), the entry variant, with room to spare.
#[repr(C)]
struct SyscallInfo {
    op: u8,
    reserved: u8,
    flags: u16,
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    nr: u64,
    args: [u64; 6],
    spare: [u64; 2],
}

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const PTRACE_SYSCALL_INFO_ENTRY: u8 = 1;

/// Forks a child that asks to be traced, stops, then calls `chroot("/")` (refused by
/// Docker's default profile to a process without CAP_SYS_CHROOT); succeeds if the tracer
/// sees that call at syscall entry, where it could rewrite or answer it.
pub(crate) fn tracer_sees_refused_call() -> Result<(), String> {
    let slash = c"/";
    let pid = fork().map_err(|e| format!("fork: {e}"))?;
    if pid == 0 {
        // SAFETY: plain syscalls in the forked child, which leaves with _exit.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                libc::_exit(1);
            }
            libc::raise(libc::SIGSTOP);
            libc::syscall(libc::SYS_chroot, slash.as_ptr());
            libc::_exit(0);
        }
    }
    let result = trace(pid);
    // SAFETY: the child is ours; killing it ends the trace.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = waitpid(pid, 0);
    result
}

fn trace(pid: libc::pid_t) -> Result<(), String> {
    let (_, status) = waitpid(pid, 0).map_err(|e| format!("waitpid: {e}"))?;
    if !libc::WIFSTOPPED(status) {
        return Err("ptrace(PTRACE_TRACEME) refused (the child could not be traced)".into());
    }
    // SAFETY: ptrace on our stopped tracee with a plain options word.
    if unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            0,
            libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL,
        )
    } != 0
    {
        return Err(format!(
            "ptrace(PTRACE_SETOPTIONS): {}",
            std::io::Error::last_os_error()
        ));
    }
    // raise() itself and the chroot: a handful of stops at most.
    for _ in 0..64 {
        // SAFETY: resumes our tracee until its next syscall stop.
        if unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, 0) } != 0 {
            return Err(format!(
                "ptrace(PTRACE_SYSCALL): {}",
                std::io::Error::last_os_error()
            ));
        }
        let (_, status) = waitpid(pid, 0).map_err(|e| format!("waitpid: {e}"))?;
        if !libc::WIFSTOPPED(status) {
            return Err("the traced child ended before its chroot was seen".into());
        }
        if libc::WSTOPSIG(status) != (libc::SIGTRAP | 0x80) {
            continue;
        }
        let mut info = SyscallInfo {
            op: 0,
            reserved: 0,
            flags: 0,
            arch: 0,
            instruction_pointer: 0,
            stack_pointer: 0,
            nr: 0,
            args: [0; 6],
            spare: [0; 2],
        };
        // SAFETY: the kernel writes at most size_of::<SyscallInfo>() bytes into `info`.
        let got = unsafe {
            libc::ptrace(
                PTRACE_GET_SYSCALL_INFO,
                pid,
                std::mem::size_of::<SyscallInfo>(),
                &mut info as *mut SyscallInfo,
            )
        };
        if got < 0 {
            return Err(format!(
                "ptrace(PTRACE_GET_SYSCALL_INFO): {}",
                std::io::Error::last_os_error()
            ));
        }
        if info.op == PTRACE_SYSCALL_INFO_ENTRY && info.nr == libc::SYS_chroot as u64 {
            return Ok(());
        }
    }
    Err("no syscall-entry stop for chroot".into())
}
