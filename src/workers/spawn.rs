//! Starting a worker: this same program again, as `serve ... --worker INDEX:LISTENER:CONTROL`,
//! with the listening socket and its end of the control socket inherited, and bound to die
//! with the supervisor.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::evented::WorkerSpec;

/// Starts worker `index` serving `listener`; `args` is the supervisor's own command line (after
/// the program name), which the worker parses the same way. Returns the child and the
/// supervisor's end of its control socket.
pub(super) fn spawn(
    index: u32,
    listener: &TcpListener,
    args: &[OsString],
) -> io::Result<(Child, UnixStream)> {
    // Both ends are close-on-exec: only the two descriptors named below reach this worker, so
    // no worker holds another's control socket open (which would hide that one's death).
    let (ours, theirs) = UnixStream::pair()?;
    let spec = WorkerSpec {
        index,
        listener_fd: listener.as_raw_fd(),
        control_fd: theirs.as_raw_fd(),
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args)
        .arg("--worker")
        .arg(spec.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // If the supervisor is killed, its workers get SIGTERM and stop by themselves.
    crate::sys::die_with_parent(&mut cmd);
    let inherited = [spec.listener_fd, spec.control_fd];
    // SAFETY: between fork and exec the closure calls only fcntl, which is async-signal-safe,
    // and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for fd in inherited {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    Ok((child, ours))
}
