//! When the kernel refuses io_uring, start-up stops with a message naming the cause and the fix, exit code
//! 1, and no panic. The refusal is real: the child runs under a seccomp filter that makes `io_uring_setup`
//! fail with EPERM, as a container runtime's default profile does.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Installs a seccomp filter in the calling process: `io_uring_setup` fails with EPERM, all else is allowed.
fn refuse_io_uring() -> std::io::Result<()> {
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        // Load the syscall number (offset 0 of struct seccomp_data).
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with a valid filter program that outlives the call; only this (forked) process is affected.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const _ as usize,
                0,
                0,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn refused_io_uring_is_a_clear_start_up_error() {
    let dir = common::scratch_dir("executor-refused");
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    command
        .current_dir(&dir)
        .env_clear()
        .env("WEBSOCKET_HOST", "127.0.0.1")
        .env("WEBSOCKET_PORT", "0")
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0");
    // SAFETY: the closure only calls async-signal-safe prctl between fork and exec.
    unsafe { command.pre_exec(refuse_io_uring) };
    let output = command.output().expect("run roomcast");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot start websocket shards: io_uring_setup failed"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("io_uring"),
        "the fix must name io_uring: {stderr}"
    );
    assert!(
        stderr.contains("ulimit -l"),
        "the fix must name the locked-memory limit: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
}
