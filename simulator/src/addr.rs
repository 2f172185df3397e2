//! RPC addresses as modules and agents write them: `host:port` for TCP, or a Unix socket path
//! (`unix:/path` or any text containing a `/`). The text is parsed by agent-pool's `Address`
//! and `HostPort`, the proxy's own parsers, so the simulator and the loadtest accept what the proxy accepts.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use agent_pool::{Address, HostPort};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};

/// Where an RPC server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAddr {
    /// TCP `host:port` (the host is resolved when used).
    Tcp(String),
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for RpcAddr {
    type Err = String;
    /// agent-pool's forms, as the proxy reads them: an [`Address`] (`ip:port`, `unix:/path`) or
    /// a [`HostPort`] to resolve when used; and, the loadtest's shorthand, a bare socket path
    /// (any text with a `/`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(address) = s.parse::<Address>() {
            return Ok(address.into());
        }
        if s.starts_with("unix:") {
            return Err(format!("address {s:?}: a Unix socket needs a path"));
        }
        if s.contains('/') {
            return Ok(RpcAddr::Unix(PathBuf::from(s)));
        }
        s.parse::<HostPort>()
            .map(|_| RpcAddr::Tcp(s.to_owned()))
            .map_err(|e| e.to_string())
    }
}

impl From<Address> for RpcAddr {
    fn from(a: Address) -> Self {
        match a {
            Address::Tcp(a) => a.into(),
            Address::Unix(p) => RpcAddr::Unix(p),
        }
    }
}

impl fmt::Display for RpcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcAddr::Tcp(a) => f.write_str(a),
            RpcAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<SocketAddr> for RpcAddr {
    fn from(a: SocketAddr) -> Self {
        RpcAddr::Tcp(a.to_string())
    }
}

/// A bound listener of either family.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix domain socket (the path is removed on drop of the server).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`; a stale Unix socket file is replaced.
    pub async fn bind(addr: &RpcAddr) -> io::Result<Listener> {
        match addr {
            RpcAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a.as_str()).await?)),
            RpcAddr::Unix(p) => {
                let _ = std::fs::remove_file(p);
                Ok(Listener::Unix(UnixListener::bind(p)?, p.clone()))
            }
        }
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<RpcAddr> {
        match self {
            Listener::Tcp(l) => Ok(RpcAddr::from(l.local_addr()?)),
            Listener::Unix(_, p) => Ok(RpcAddr::Unix(p.clone())),
        }
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l, _) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}

/// A connected stream of either family.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
}

/// The next local port a source-bound connection tries (see [`connect_from`]).
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// Local ports used for source-bound connections: below Linux's ephemeral range (32768..61000)
/// on purpose. Every explicitly bound port gets a bind bucket that connect()'s own port search
/// then skips on every address of the host, for as long as a TIME_WAIT socket holds it: binding
/// from the ephemeral range (or `bind(ip, 0)`, which picks from it) at a thousand calls per
/// second leaves no port for any other process's connect() within a minute.
const PORTS: std::ops::Range<u32> = 10000..32700;

/// Connects to `target` from `ip`, choosing the local port itself, round-robin over [`PORTS`],
/// so a port comes back only after all others (TIME_WAIT reuse on loopback needs a second to
/// have passed); ports in use (a listener) are skipped. IP_BIND_ADDRESS_NO_PORT would let the
/// kernel choose at connect time, but needs a raw setsockopt this crate cannot make without
/// unsafe code.
async fn connect_from(ip: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last = None;
    for _ in 0..16 {
        let n = NEXT_PORT.fetch_add(1, Relaxed);
        let port = PORTS.start + n % (PORTS.end - PORTS.start);
        let sock = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        if let Err(e) = sock.bind(SocketAddr::new(ip, port as u16)) {
            last = Some(e);
            continue;
        }
        match sock.connect(target).await {
            Ok(s) => return Ok(s),
            // The 4-tuple is still held (a TIME_WAIT younger than a second): next port.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no local port")))
}

impl Stream {
    /// Connects to `addr`, binding the local side to `source` first when given (TCP only).
    pub async fn connect(addr: &RpcAddr, source: Option<IpAddr>) -> io::Result<Stream> {
        match addr {
            RpcAddr::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p).await?)),
            RpcAddr::Tcp(a) => {
                let target = resolve(a).await?;
                let s = match source {
                    None => TcpStream::connect(target).await?,
                    Some(ip) => connect_from(ip, target).await?,
                };
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
        }
    }

    /// Makes the next close send a TCP RST instead of a FIN (no-op for Unix sockets).
    pub fn set_reset_on_close(&self) {
        if let Stream::Tcp(s) = self {
            let _ = s.set_zero_linger();
        }
    }
}

/// Resolves `host:port` to its first address.
pub async fn resolve(a: &str) -> io::Result<SocketAddr> {
    if let Ok(sa) = a.parse() {
        return Ok(sa);
    }
    tokio::net::lookup_host(a)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{a}: no address")))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_both_forms() {
        assert_eq!(
            "127.0.0.1:9999".parse(),
            Ok(RpcAddr::Tcp("127.0.0.1:9999".into()))
        );
        assert_eq!(
            "unix:/tmp/a.sock".parse(),
            Ok(RpcAddr::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            "/var/run/sigsci.sock".parse(),
            Ok(RpcAddr::Unix("/var/run/sigsci.sock".into()))
        );
        assert_eq!(
            "agent-0.agents:9999".parse(),
            Ok(RpcAddr::Tcp("agent-0.agents:9999".into()))
        );
        assert_eq!(
            "[::1]:0".parse(),
            Ok(RpcAddr::Tcp("[::1]:0".into())),
            "port 0 to listen on"
        );
        assert!("nonsense".parse::<RpcAddr>().is_err());
        assert!("agents:http".parse::<RpcAddr>().is_err());
        assert!("unix:".parse::<RpcAddr>().is_err());
        assert_eq!(RpcAddr::Unix("/x".into()).to_string(), "unix:/x");
    }
}
