//! The control socket: state-changing actions reach the proxy here, through a local Unix
//! socket (mode 0600: the proxy's own user, and root), never through the network.
//!
//! One line in, one line out:
//! - `drain` → `draining` (or `already draining`): start the drain, as SIGTERM does; what the
//!   preStop hook (`sigsci-proxy drain`) sends.
//! - anything else → `unknown command`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::listener::{UnixPathGuard, bind_unix};

/// Permissions of the control socket: owner only.
const MODE: u32 = 0o600;
/// Longest command line read.
const MAX_LINE: u64 = 64;
/// A client gets this long to send its line (and `request_drain` to get its answer).
const TIMEOUT: Duration = Duration::from_secs(2);

/// A bound control socket; its file is removed when this is dropped (if still ours).
pub(crate) struct ControlSocket {
    listener: UnixListener,
    guard: UnixPathGuard,
}

impl ControlSocket {
    /// Binds `path` (refusing a path another process accepts on; a stale one is replaced).
    pub(crate) fn bind(path: &Path) -> io::Result<Self> {
        let (listener, guard) = bind_unix(path, 16, MODE)?;
        Ok(Self { listener, guard })
    }

    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        self.guard.path()
    }

    /// Answers commands until `exit` is cancelled; `drain` cancels `drain`.
    pub(crate) async fn serve(self, drain: CancellationToken, exit: CancellationToken) {
        loop {
            let stream = tokio::select! {
                () = exit.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        debug!(error = %e, "Control accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            // One at a time: commands are rare and short, and each is bounded by TIMEOUT.
            if let Err(e) = tokio::time::timeout(TIMEOUT, command(stream, &drain)).await {
                debug!(error = %e, "Control client too slow");
            }
        }
    }
}

async fn command(stream: UnixStream, drain: &CancellationToken) {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(rd.take(MAX_LINE))
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let answer = match line.trim() {
        "drain" if drain.is_cancelled() => "already draining\n",
        "drain" => {
            info!("Drain requested on the control socket");
            drain.cancel();
            "draining\n"
        }
        _ => "unknown command\n",
    };
    let _ = wr.write_all(answer.as_bytes()).await;
    let _ = wr.shutdown().await;
}

/// `sigsci-proxy drain`: sends `drain` to the control socket at `path` and returns the
/// proxy's answer (`draining` or `already draining`).
pub async fn request_drain(path: impl Into<PathBuf>) -> io::Result<String> {
    let path = path.into();
    let exchange = async {
        let mut stream = UnixStream::connect(&path).await?;
        stream.write_all(b"drain\n").await?;
        let mut answer = String::new();
        stream.take(MAX_LINE).read_to_string(&mut answer).await?;
        Ok::<_, io::Error>(answer.trim().to_owned())
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
    if answer.ends_with("draining") {
        Ok(answer)
    } else {
        Err(io::Error::other(format!("unexpected answer `{answer}`")))
    }
}
