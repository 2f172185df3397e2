//! Listening sockets (TCP via socket2 with our options, or a Unix socket) and the accept loop.
//!
//! The accept loop is the proxy's real load (modules open a connection per RPC), so it does
//! little: take a connection slot, spawn the connection's task (TCP_NODELAY is inherited from
//! the listener, and with `--defer-accept` the kernel queues a TCP connection only once its
//! call's first bytes are there, so accepting and reading it are one wake-up). It survives
//! resource exhaustion (EMFILE, ENFILE, ENOBUFS...) by backing off, logging once per episode, and
//! keeps serving the connections already open.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_pool::Backoff;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::admission::Admission;
#[cfg(test)]
use crate::config::DEFAULT_UNIX_MODE;
use crate::config::ListenAddr;
use crate::downstream::{self, Shared};
use crate::metrics as m;
use crate::stream::Stream;

mod defer_accept;

/// A bound listening socket.
pub(crate) enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket; the path is removed when the listener is dropped.
    Unix(UnixListener, UnixPathGuard),
}

/// Removes the Unix socket file this process created, and only that one: the file at the path
/// must still be the inode `bind` made (another process may have replaced it since, e.g. a
/// newer instance that found ours stale, or an operator).
pub(crate) struct UnixPathGuard {
    path: PathBuf,
    /// `(st_dev, st_ino)` of the socket file right after `bind`.
    id: (u64, u64),
}

impl UnixPathGuard {
    /// The socket's path.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => {
                let _ = std::fs::remove_file(&self.path);
            }
            Ok(_) => {
                debug!(path = %self.path.display(), "Socket path replaced since bind, left in place")
            }
            Err(_) => {}
        }
    }
}

/// Binds a listening Unix socket at `path` with permissions `mode` (not the umask's).
///
/// A socket file already at `path` is probed first: if a process accepts on it, this fails
/// (`AddrInUse`) and leaves the file alone; if the connection is refused it is a leftover of a
/// process that is gone, and it is replaced. Any other kind of file is an error.
pub(crate) fn bind_unix(
    path: &std::path::Path,
    backlog: i32,
    mode: u32,
) -> io::Result<(UnixListener, UnixPathGuard)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        // Non-blocking, so a live listener with a full backlog answers EAGAIN at once instead
        // of making us wait for a slot.
        let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        probe.set_nonblocking(true)?;
        match probe.connect(&SockAddr::unix(path)?) {
            Ok(()) => return Err(in_use(path)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(in_use(path)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                info!(path = %path.display(), "Removing stale socket (nothing accepts on it)");
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    let guard = UnixPathGuard {
        path: path.to_owned(),
        id: (meta.dev(), meta.ino()),
    };
    // Before listen: no client can connect while the mode is still the umask's.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    socket.listen(backlog)?;
    let std_listener: std::os::unix::net::UnixListener = socket.into();
    Ok((UnixListener::from_std(std_listener)?, guard))
}

fn in_use(path: &std::path::Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "another process accepts connections on {}; stop it or choose another path",
            path.display()
        ),
    )
}

impl Listener {
    /// [`Listener::bind_with_mode`] with [`DEFAULT_UNIX_MODE`] and without deferred accept,
    /// for tests (the server passes its configuration).
    #[cfg(test)]
    pub(crate) fn bind(addr: &ListenAddr, backlog: u32, reuse_port: bool) -> io::Result<Self> {
        Self::bind_with_mode(addr, backlog, reuse_port, DEFAULT_UNIX_MODE, false)
    }

    /// Binds `addr` with SO_REUSEADDR, the given backlog and optionally SO_REUSEPORT; a Unix
    /// socket gets permissions `unix_mode` (see [`bind_unix`]). With `defer_accept` a TCP
    /// listener takes a connection only once its first bytes have arrived (Linux
    /// `TCP_DEFER_ACCEPT`); a Unix socket has no such option.
    pub(crate) fn bind_with_mode(
        addr: &ListenAddr,
        backlog: u32,
        reuse_port: bool,
        unix_mode: u32,
        defer_accept: bool,
    ) -> io::Result<Self> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match addr {
            ListenAddr::Tcp(sa) => {
                let socket =
                    Socket::new(Domain::for_address(*sa), Type::STREAM, Some(Protocol::TCP))?;
                socket.set_reuse_address(true)?;
                if reuse_port {
                    socket.set_reuse_port(true)?;
                }
                // Accepted sockets inherit it (Linux): no setsockopt per connection.
                socket.set_tcp_nodelay(true)?;
                if defer_accept {
                    defer_accept::set(&socket, true)?;
                }
                socket.set_nonblocking(true)?;
                socket.bind(&SockAddr::from(*sa))?;
                socket.listen(backlog)?;
                Ok(Self::Tcp(TcpListener::from_std(socket.into())?))
            }
            ListenAddr::Unix(path) => {
                let (listener, guard) = bind_unix(path, backlog, unix_mode)?;
                Ok(Self::Unix(listener, guard))
            }
        }
    }

    /// The bound address (with the real port when `:0` was asked).
    pub(crate) fn local_addr(&self) -> ListenAddr {
        match self {
            Self::Tcp(l) => ListenAddr::Tcp(
                l.local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
            Self::Unix(_, guard) => ListenAddr::Unix(guard.path.clone()),
        }
    }
}

/// An accepted connection, with the peer's address when it has one (TCP).
struct Accepted {
    stream: Stream,
    peer: Option<SocketAddr>,
}

impl Accepted {
    fn tcp((stream, peer): (TcpStream, SocketAddr)) -> Self {
        let stream = Stream::tcp(stream);
        let peer = Some(peer);
        Self { stream, peer }
    }

    fn unix(stream: UnixStream) -> Self {
        let stream = Stream::unix(stream);
        Self { stream, peer: None }
    }
}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(l) => l.accept().await.map(Accepted::tcp),
            Self::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::unix(s)),
        }
    }

    /// Stops deferring accepts (a TCP listener; nothing to do for a Unix socket), for a drain:
    /// a connection made from then on is queued at once, so the backlog sweep before the close
    /// takes it even when its first bytes come later; one kept back would be reset by the close.
    fn stop_deferring(&self) {
        if let Self::Tcp(l) = self
            && let Err(e) = defer_accept::set(&socket2::SockRef::from(l), false)
        {
            warn!(error = %e, "Could not stop deferring accepts for the drain");
        }
    }

    /// A connection waiting in the kernel's queue, asked of the kernel itself rather than of
    /// the runtime's last readiness poll; `None` when the queue is empty.
    fn accept_queued(&self) -> Option<io::Result<Accepted>> {
        let sock = match self {
            Self::Tcp(l) => socket2::SockRef::from(l),
            Self::Unix(l, _) => socket2::SockRef::from(l),
        };
        let (socket, peer) = match sock.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => return Some(Err(e)),
        };
        let registered = socket.set_nonblocking(true).and_then(|()| match self {
            Self::Tcp(_) => {
                let peer = peer
                    .as_socket()
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                TcpStream::from_std(socket.into()).map(|s| Accepted::tcp((s, peer)))
            }
            Self::Unix(..) => UnixStream::from_std(socket.into()).map(Accepted::unix),
        });
        Some(registered)
    }
}

/// Errors that concern one connection only: accept again at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// How long a new connection at the limit waits for the idle one it displaced to close.
const EVICTION_WAIT: Duration = Duration::from_millis(5);

/// Longest a closing listener keeps taking connections from its backlog. Under steady load it
/// is never quiet for 1 ms: without a bound it would keep accepting, and the drain would last
/// until the load stopped or the drain timeout cut calls off.
const BACKLOG_DRAIN_MAX: Duration = Duration::from_millis(50);

/// Accepts until `stop` is cancelled, spawning a task per connection on `tracker`; stops
/// deferring accepts once `draining` is cancelled (see [`Listener::stop_deferring`]).
pub(crate) async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    tracker: TaskTracker,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    let local = listener.local_addr().to_string();
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(500));
    let mut closing: Option<tokio::time::Instant> = None;
    let drain_started = draining.cancelled();
    tokio::pin!(drain_started);
    let mut deferring = true;
    loop {
        let next = tokio::select! {
            biased;
            () = &mut drain_started, if deferring => {
                listener.stop_deferring();
                deferring = false;
                continue;
            }
            next = next_accepted(&listener, &stop, &mut closing) => next,
        };
        let Some(accepted) = next else { break };
        match accepted {
            Ok(accepted) => {
                if backoff.attempts() > 0 {
                    info!(listen.addr = %local, "Accepting again");
                    backoff.reset();
                }
                m::connection_accepted();
                admit(accepted, &shared, &admission, &tracker).await;
            }
            Err(e) if is_connection_error(&e) => {
                debug!(error = %e, "Accept failed for one connection");
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning; open
                // connections keep being served meanwhile.
                if backoff.attempts() == 0 {
                    warn!(listen.addr = %local, error = %e, "Accept failing, backing off");
                }
                let delay = backoff.next_delay();
                m::accept_error();
                if closing.is_some() {
                    break;
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    debug!(listen.addr = %local, "Listener closed");
}

/// The next accept's result; `None` once the listener is to close. After `stop` (recorded in
/// `closing`), the connections still waiting in the backlog are taken first, for at most
/// BACKLOG_DRAIN_MAX: closing a listener resets them, and the module already sent, or is
/// sending, its request.
async fn next_accepted(
    listener: &Listener,
    stop: &CancellationToken,
    closing: &mut Option<tokio::time::Instant>,
) -> Option<io::Result<Accepted>> {
    let since = match *closing {
        Some(since) => since,
        None => tokio::select! {
            biased;
            () = stop.cancelled() => *closing.insert(tokio::time::Instant::now()),
            r = listener.accept() => return Some(r),
        },
    };
    let waited = if since.elapsed() < BACKLOG_DRAIN_MAX {
        tokio::time::timeout(Duration::from_millis(1), listener.accept())
            .await
            .ok()
    } else {
        None
    };
    // Quiet for 1 ms as far as the runtime saw, or out of time; other tasks may have run
    // since its last poll, so ask the kernel right before the close.
    waited.or_else(|| listener.accept_queued())
}

/// Gives an accepted connection its slot and its task, or resets it at the limit.
async fn admit(
    accepted: Accepted,
    shared: &Arc<Shared>,
    admission: &Arc<Admission>,
    tracker: &TaskTracker,
) {
    let Some(admitted) = admission.admit(EVICTION_WAIT).await else {
        // Over the limit with nothing idle to displace: a reset, so the module fails open
        // at once (some hang on a clean close) rather than wait in a queue.
        m::connection_rejected();
        m::uninspected(m::Uninspected::ConnectionLimit);
        debug!("Connection limit reached, resetting new connection");
        accepted.stream.reset_on_close();
        return;
    };
    let span = match accepted.peer {
        Some(peer) => debug_span!("conn", client.addr = %peer),
        None => debug_span!("conn", client.addr = "unix"),
    };
    let serve = downstream::serve(accepted.stream, accepted.peer, shared.clone(), admitted);
    tracker.spawn(serve.instrument(span));
}

#[cfg(test)]
mod tests {
    use tokio_util::either::Either;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_inherit_tcp_nodelay() {
        // The accept loop no longer sets TCP_NODELAY per connection: answers must still leave
        // at once (Nagle would hold a small answer up to 40 ms behind an unacknowledged one).
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let ListenAddr::Tcp(addr) = listener.local_addr() else {
            unreachable!()
        };
        let _client = TcpStream::connect(addr).await.unwrap();
        let Either::Left(stream) = &*listener.accept().await.unwrap().stream else {
            unreachable!()
        };
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_deferred_listener_takes_a_connection_once_it_has_sent_bytes() {
        use tokio::io::AsyncWriteExt;
        let addr = "127.0.0.1:0".parse().unwrap();
        let listener = Listener::bind_with_mode(&addr, 16, false, DEFAULT_UNIX_MODE, true).unwrap();
        let ListenAddr::Tcp(addr) = listener.local_addr() else {
            unreachable!()
        };
        let silent = TcpStream::connect(addr).await.unwrap();
        let connected = std::time::Instant::now();
        let mut calling = TcpStream::connect(addr).await.unwrap();
        calling.write_all(b"\x94").await.unwrap();
        let calling = Some(calling.local_addr().unwrap());
        let silent = Some(silent.local_addr().unwrap());
        // The silent one, connected first, waits out the kernel's deferral (about a second)
        // before it is queued; the one that sent a byte is taken at once.
        let mut taken = vec![listener.accept().await.unwrap().peer];
        taken.extend(listener.accept_queued().map(|a| a.unwrap().peer));
        if taken.contains(&silent) {
            assert!(
                connected.elapsed() >= Duration::from_millis(900),
                "{taken:?}"
            );
        }
        assert!(taken.contains(&calling), "{taken:?}");
    }

    #[tokio::test]
    async fn queued_connections_are_taken_without_waiting_for_readiness() {
        let dir = tempfile::tempdir().unwrap();
        for addr in [
            "127.0.0.1:0".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix(dir.path().join("rpc.sock")),
        ] {
            let listener = Listener::bind(&addr, 16, false).unwrap();
            assert!(listener.accept_queued().is_none(), "{addr:?}: empty queue");
            let _clients = match listener.local_addr() {
                ListenAddr::Tcp(a) => (Some(TcpStream::connect(a).await.unwrap()), None),
                ListenAddr::Unix(p) => (None, Some(UnixStream::connect(p).await.unwrap())),
            };
            let accepted = listener.accept_queued().expect("one queued").unwrap();
            match (addr, &*accepted.stream, accepted.peer) {
                (ListenAddr::Tcp(_), Either::Left(stream), Some(peer)) => {
                    assert!(peer.ip().is_loopback());
                    assert!(stream.nodelay().unwrap());
                }
                (ListenAddr::Unix(_), Either::Right(_), None) => {}
                _ => panic!("accepted the wrong kind of connection"),
            }
            assert!(listener.accept_queued().is_none(), "taken once");
        }
    }
}
