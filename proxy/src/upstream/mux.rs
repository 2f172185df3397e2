//! `mux` mode: a few persistent connections per agent, RPCs multiplexed by proxy-assigned u32
//! msgids. A writer task batches frames queued by callers into as few writes as possible; a
//! reader task matches responses back to the waiting caller by msgid. A connection that fails
//! fails every call waiting on it at once; the next call reconnects, with backoff.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Connected, UpstreamConfig, connect};
use crate::codec::{Frame, FrameCodec, FrameKind, Limits};
use crate::error::UpstreamError;
use crate::metrics as m;
use agent_pool::Address;

/// Frames queued per connection before callers wait.
const QUEUE: usize = 1024;
/// Largest batch the writer assembles before writing.
const MAX_BATCH: usize = 64 * 1024;

type Waiter = oneshot::Sender<Result<Frame, UpstreamError>>;

/// One agent's persistent connections.
pub(super) struct AgentConns {
    address: Address,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    connect_timeout: Duration,
    limits: Limits,
    exit: CancellationToken,
}

struct Slot {
    conn: Mutex<Option<Arc<MuxConn>>>,
    /// Held while connecting; guards the reconnect backoff.
    connecting: tokio::sync::Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Slot {
    fn live(&self) -> Option<Arc<MuxConn>> {
        let conn = self.conn.lock().expect("slot lock");
        conn.as_ref().filter(|c| c.is_alive()).cloned()
    }
}

impl AgentConns {
    pub(super) fn new(address: Address, config: &UpstreamConfig, exit: &CancellationToken) -> Self {
        let slots = (0..config.connections.max(1))
            .map(|_| Slot {
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(Backoff::default()),
            })
            .collect();
        Self {
            address,
            slots,
            next: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            limits: config.limits,
            exit: exit.child_token(),
        }
    }

    pub(super) fn address(&self) -> &Address {
        &self.address
    }

    /// Closes every connection (the agent left the pool).
    pub(super) fn close(&self) {
        self.exit.cancel();
    }

    /// Connects every slot that has no live connection, in the background.
    pub(super) fn warm(self: &Arc<Self>) {
        for index in 0..self.slots.len() {
            if self.slots[index].live().is_none() {
                let this = self.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + this.connect_timeout;
                    let _ = this.connect_slot(index, deadline, false).await;
                });
            }
        }
    }

    /// A live connection, round-robin over the slots. A dead slot is reconnected in the
    /// background while another slot is live, inline when none is.
    pub(super) async fn get(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<Arc<MuxConn>, UpstreamError> {
        let n = self.slots.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        if let Some(c) = self.slots[first].live() {
            return Ok(c);
        }
        for i in 1..n {
            if let Some(c) = self.slots[(first + i) % n].live() {
                let this = self.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + this.connect_timeout;
                    let _ = this.connect_slot(first, deadline, false).await;
                });
                return Ok(c);
            }
        }
        self.connect_slot(first, deadline, true).await
    }

    async fn connect_slot(
        &self,
        index: usize,
        deadline: Instant,
        wait: bool,
    ) -> Result<Arc<MuxConn>, UpstreamError> {
        let slot = &self.slots[index];
        let mut backoff = if wait {
            timeout_at(deadline, slot.connecting.lock())
                .await
                .map_err(|_| UpstreamError::ConnectTimeout)?
        } else {
            slot.connecting
                .try_lock()
                .map_err(|_| UpstreamError::ConnectTimeout)?
        };
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        let now = Instant::now();
        if backoff.until.is_some_and(|until| now < until) {
            return Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "agent unreachable, reconnect backing off",
            )));
        }
        match connect(&self.address, deadline.min(now + self.connect_timeout)).await {
            Ok(stream) => {
                *backoff = Backoff::default();
                let conn = match stream {
                    Connected::Tcp(s) => {
                        let (r, w) = s.into_split();
                        MuxConn::spawn(r, w, self.limits, &self.exit)
                    }
                    Connected::Unix(s) => {
                        let (r, w) = s.into_split();
                        MuxConn::spawn(r, w, self.limits, &self.exit)
                    }
                };
                *slot.conn.lock().expect("slot lock") = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                backoff.failures = backoff.failures.saturating_add(1);
                let delay = Duration::from_millis(5) * 2u32.pow(backoff.failures.min(8));
                backoff.until = Some(Instant::now() + delay.min(Duration::from_secs(1)));
                Err(e)
            }
        }
    }
}

/// One multiplexed connection.
pub(super) struct MuxConn {
    queue: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u32, Waiter>>,
    next_id: AtomicU32,
    closed: AtomicBool,
    dead: CancellationToken,
}

impl MuxConn {
    fn spawn<R, W>(reader: R, writer: W, limits: Limits, exit: &CancellationToken) -> Arc<Self>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        let conn = Arc::new(Self {
            queue: tx,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            closed: AtomicBool::new(false),
            dead: exit.child_token(),
        });
        m::upstream_open(1.0);
        tokio::spawn(conn.clone().write_loop(rx, writer));
        tokio::spawn(
            conn.clone()
                .read_loop(FramedRead::new(reader, FrameCodec::new(limits))),
        );
        conn
    }

    fn is_alive(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Fails every waiting call and stops both tasks. Idempotent.
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        m::upstream_open(-1.0);
        self.dead.cancel();
        let waiters: Vec<_> = self.pending.lock().expect("pending lock").drain().collect();
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(UpstreamError::Broken(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "agent connection closed",
            ))));
        }
    }

    /// Sends `request` with a fresh msgid and waits for the matching response.
    pub(super) async fn call(
        &self,
        request: &Frame,
        request_id: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Frame, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = request
            .rewrite(Some(u64::from(id)), request_id)
            .map_err(UpstreamError::Protocol)?;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let _guard = PendingGuard { conn: self, id };
        if !self.is_alive() {
            // Closed between `get` and now: nothing was sent.
            return Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "agent connection closed",
            )));
        }
        match timeout_at(deadline, self.queue.send(frame.into_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(UpstreamError::Connect(io::Error::other(
                    "agent connection closed",
                )));
            }
            Err(_) => return Err(UpstreamError::Timeout),
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(UpstreamError::Broken(io::Error::other(
                "agent connection closed",
            ))),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// Queues a notification.
    pub(super) fn notify(&self, frame: &Frame) -> Result<(), UpstreamError> {
        self.queue
            .try_send(frame.clone().into_bytes())
            .map_err(|_| {
                UpstreamError::Connect(io::Error::other("agent connection busy or closed"))
            })
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Bytes>,
        mut w: W,
    ) {
        let mut batch = BytesMut::new();
        loop {
            let first = tokio::select! {
                () = self.dead.cancelled() => break,
                next = rx.recv() => match next { Some(b) => b, None => break },
            };
            let result = match rx.try_recv() {
                Err(_) => w.write_all(&first).await,
                Ok(second) => {
                    // Several callers queued at once: one write for all of them.
                    batch.clear();
                    batch.extend_from_slice(&first);
                    batch.extend_from_slice(&second);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(more) => batch.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    w.write_all(&batch).await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "Agent connection write failed");
                break;
            }
        }
        self.close();
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        self: Arc<Self>,
        mut frames: FramedRead<R, FrameCodec>,
    ) {
        loop {
            let next = tokio::select! {
                () = self.dead.cancelled() => break,
                next = frames.next() => next,
            };
            match next {
                Some(Ok(frame)) if frame.kind() == FrameKind::Response => {
                    let Some(id) = frame.msgid().and_then(|id| u32::try_from(id).ok()) else {
                        continue;
                    };
                    let waiter = self.pending.lock().expect("pending lock").remove(&id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Ok(frame));
                    }
                    // No waiter: its caller gave up (deadline); the late answer is dropped.
                }
                Some(Ok(_)) => {} // agents do not send requests; ignore
                Some(Err(e)) => {
                    debug!(error = %e, "Agent sent an invalid frame, closing connection");
                    break;
                }
                None => {
                    debug!("Agent closed the connection");
                    break;
                }
            }
        }
        self.close();
    }
}

impl Drop for MuxConn {
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes a caller's pending entry however its call ends.
struct PendingGuard<'a> {
    conn: &'a MuxConn,
    id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.id);
    }
}
