//! One stream type for both socket families, module and agent side alike: what the listener
//! accepts and what upstream connects. The family matters only where a socket is made (the
//! listener, `upstream::connect`) and where a close can be a reset; everything else (the
//! connection task, the mux, per-call exchanges) reads and writes a [`Stream`] or its halves.

use std::io;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream, tcp, unix};
use tokio_util::either::Either;

/// A connected stream of either family. It reads and writes as tokio-util's `Either` of the two
/// (which it derefs to), so no forwarding code is written here.
#[derive(Debug)]
pub(crate) struct Stream(Either<TcpStream, UnixStream>);

impl Stream {
    /// A TCP stream.
    pub(crate) fn tcp(stream: TcpStream) -> Self {
        Self(Either::Left(stream))
    }

    /// A Unix domain socket stream.
    pub(crate) fn unix(stream: UnixStream) -> Self {
        Self(Either::Right(stream))
    }

    /// Makes the coming close a reset (TCP RST): every module fails open at once on a reset,
    /// while some hang on a clean close. A Unix socket has no reset: it just closes.
    pub(crate) fn reset_on_close(&self) {
        if let Either::Left(s) = &self.0 {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }

    /// Splits it into halves each task can own.
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self.0 {
            Either::Left(s) => {
                let (r, w) = s.into_split();
                (Either::Left(r), WriteHalf::Tcp(w))
            }
            Either::Right(s) => {
                let (r, w) = s.into_split();
                (Either::Right(r), WriteHalf::Unix(w))
            }
        }
    }
}

impl Deref for Stream {
    type Target = Either<TcpStream, UnixStream>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Stream {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// The read side of a split [`Stream`] (tokio-util's `Either` reads from either family).
pub(crate) type ReadHalf = Either<tcp::OwnedReadHalf, unix::OwnedReadHalf>;

/// The write side of a split [`Stream`]: written without waiting, by whoever holds a frame.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    /// TCP.
    Tcp(tcp::OwnedWriteHalf),
    /// Unix domain socket.
    Unix(unix::OwnedWriteHalf),
}

impl WriteHalf {
    /// Writes what the socket takes now, without waiting.
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(w) => w.try_write(bytes),
            Self::Unix(w) => w.try_write(bytes),
        }
    }

    /// Waits until the socket takes more.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(w) => w.writable().await,
            Self::Unix(w) => w.writable().await,
        }
    }
}
