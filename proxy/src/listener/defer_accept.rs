//! `TCP_DEFER_ACCEPT` on the RPC listener: the kernel hands a connection over only once its first
//! bytes have arrived, so the proxy wakes once for a module's connection and its call instead
//! of twice. What the kernel does with a connection that stays silent is in
//! docs/architecture.md ("Accept").
//!
//! No safe wrapper exists on stable Rust (socket2 and rustix have none, std's is unstable), so
//! this is the workspace's second `unsafe`, one `setsockopt` of an `int`; the lint is `deny`
//! and proxy/tests/it/layout.rs checks that only heap_trim.rs and this file allow it.
#![allow(unsafe_code)]

use std::io;

/// Seconds a silent connection is kept out of the accept queue: the kernel turns them into
/// SYN-ACK retransmissions (1 s: one, at about a second), after which the client's
/// acknowledgement of the retransmitted SYN-ACK queues it anyway. HAProxy (`defer-accept`) and
/// nginx (`deferred`) set the same 1.
pub(crate) const SECONDS: i32 = 1;

/// Sets `TCP_DEFER_ACCEPT` on the listening TCP socket `socket` to [`SECONDS`] (`on`) or 0.
/// Turning it off concerns the connections that arrive from then on; one already kept back
/// waits for its first bytes or the kernel's retransmission.
#[cfg(target_os = "linux")]
pub(crate) fn set(socket: &socket2::Socket, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = if on { SECONDS } else { 0 };
    // SAFETY: `socket` is an open socket borrowed for the call; the option value is a live
    // `c_int` on this stack frame and its exact size is passed with it; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Other systems have no `TCP_DEFER_ACCEPT`: accepting stays as it is.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set(_socket: &socket2::Socket, _on: bool) -> io::Result<()> {
    Ok(())
}
