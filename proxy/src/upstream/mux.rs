//! `mux` mode: a few persistent connections per agent, RPCs multiplexed by proxy-assigned u32
//! msgids. A caller writes its frame into the socket itself while nothing is queued (no task
//! hand-off on the way to the agent: the common case); only what the socket does not take at
//! once is queued, in order, for a flusher task. A reader task matches responses back to the
//! waiting caller by msgid. A connection that fails fails every call waiting on it at once; the
//! next call reconnects, with backoff.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use super::connect::{UpstreamConfig, connect};
use super::queued::QueuedBytes;
use crate::codec::{Frame, FrameCodec, FrameKind, Limits};
use crate::error::UpstreamError;
use crate::metrics as m;
use crate::stream::{ReadHalf, Stream, WriteHalf};
use agent_pool::{Address, Backoff};

/// Bytes queued on one connection (the agent reads slower than callers write) before further
/// calls are refused: they go to another agent rather than wait behind a stalled socket.
const MAX_QUEUED: usize = 8 << 20;

/// Capacity an emptied queue may keep; a larger one is freed. A queue grown to megabytes by an
/// agent that read slowly once would otherwise hold them for the connection's life, on every
/// agent connection, outside every budget (docs/faults.md, "Memory").
const QUEUE_KEEP: usize = 64 << 10;

type Waiter = oneshot::Sender<Result<Frame, UpstreamError>>;

/// One agent's persistent connections.
pub(super) struct AgentConns {
    address: Address,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    connect_timeout: Duration,
    limits: Limits,
    queued: Arc<QueuedBytes>,
    exit: CancellationToken,
}

struct Slot {
    conn: Mutex<Option<Arc<MuxConn>>>,
    /// Held while connecting; guards the reconnect backoff.
    connecting: tokio::sync::Mutex<Reconnect>,
    /// A background reconnect is spawned and has not ended: calls that land on the dead slot
    /// meanwhile spawn no other.
    reconnecting: AtomicBool,
}

/// A slot's reconnect backoff: after a failed connect, calls fail fast until `until`, so an
/// unreachable agent costs no connect attempt per call. 10 ms doubling to 1 s.
struct Reconnect {
    delays: Backoff,
    until: Option<Instant>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            delays: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            until: None,
        }
    }
}

impl Slot {
    fn live(&self) -> Option<Arc<MuxConn>> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        conn.as_ref().filter(|c| c.is_alive()).cloned()
    }
}

impl AgentConns {
    pub(super) fn new(address: Address, config: &UpstreamConfig, exit: &CancellationToken) -> Self {
        let slots = (0..config.connections.max(1))
            .map(|_| Slot {
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(Reconnect::default()),
                reconnecting: AtomicBool::new(false),
            })
            .collect();
        Self {
            address,
            slots,
            next: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            limits: config.limits,
            queued: config.queued.clone(),
            exit: exit.child_token(),
        }
    }

    pub(super) fn address(&self) -> &Address {
        &self.address
    }

    /// The span of this agent's connection tasks: their log lines name the agent, not the
    /// module connection whose call happened to open them.
    fn span(&self) -> tracing::Span {
        tracing::debug_span!(parent: None, "agent_conn", agent.addr = %self.address)
    }

    /// Closes every connection (the agent left the pool).
    pub(super) fn close(&self) {
        self.exit.cancel();
    }

    /// Closes the connections that look live: a fresh connect to the agent failed while they
    /// did, so the path drops packets and they would only hold calls until their deadlines.
    /// Their calls fail now (a PreRequest may still be retried elsewhere); the slots reconnect
    /// once the agent answers a connect again.
    fn close_live(&self) {
        for slot in &self.slots {
            if let Some(conn) = slot.live() {
                conn.close();
            }
        }
    }

    /// Connects every slot that has no live connection, in the background.
    pub(super) fn warm(self: &Arc<Self>) {
        for index in 0..self.slots.len() {
            if self.slots[index].live().is_none() {
                self.reconnect_in_background(index);
            }
        }
    }

    /// Spawns a reconnect of slot `index` unless one is already under way.
    fn reconnect_in_background(self: &Arc<Self>, index: usize) {
        let slot = &self.slots[index];
        if slot
            .reconnecting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let this = self.clone();
        let span = self.span();
        tokio::spawn(
            async move {
                let deadline = Instant::now() + this.connect_timeout;
                let _ = this.connect_slot(index, deadline, false, false).await;
                this.slots[index]
                    .reconnecting
                    .store(false, Ordering::Release);
            }
            .instrument(span),
        );
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
                self.reconnect_in_background(first);
                return Ok(c);
            }
        }
        self.connect_slot(first, deadline, true, false).await
    }

    /// Whether the agent accepts a connection now. With a live connection, a fresh one is made
    /// and closed at once (a FIN, as any client's close: at most 600 TIME_WAIT sockets per
    /// suspect agent at 10 probes a second): a live connection says nothing about the path, since a host
    /// that vanished without a reset (its node lost, a partition) leaves established
    /// connections "live" for minutes while every call on them times out. When the fresh
    /// connect fails, the live ones are closed (their calls fail now; a PreRequest may be
    /// retried elsewhere). With none live, a fresh one is made past any reconnect backoff
    /// (which is kept for the calls' path) and stays for the calls that follow.
    pub(super) async fn probe(self: &Arc<Self>) -> bool {
        let deadline = Instant::now() + self.connect_timeout;
        if self.slots.iter().any(|s| s.live().is_some()) {
            return match connect(&self.address, deadline).await {
                Ok(_) => true,
                Err(_) => {
                    self.close_live();
                    false
                }
            };
        }
        self.connect_slot(0, deadline, false, true).await.is_ok()
    }

    /// Connects slot `index`. `wait`: queue behind a connect already under way (else fail at
    /// once); `past_backoff`: ignore the reconnect backoff (a probe).
    async fn connect_slot(
        &self,
        index: usize,
        deadline: Instant,
        wait: bool,
        past_backoff: bool,
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
        if !past_backoff && backoff.until.is_some_and(|until| now < until) {
            return Err(UpstreamError::ConnectFailed(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "agent unreachable, reconnect backing off",
            )));
        }
        match connect(&self.address, deadline.min(now + self.connect_timeout)).await {
            Ok(stream) => {
                *backoff = Reconnect::default();
                let conn = MuxConn::spawn(stream, self, self.span());
                *slot.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                backoff.until = Some(Instant::now() + backoff.delays.next_delay());
                Err(e)
            }
        }
    }
}

/// Bytes the socket did not take at once, in order. While `flushing`, every frame goes behind
/// them so frames never interleave.
#[derive(Default)]
struct Outbox {
    queued: BytesMut,
    flushing: bool,
}

/// One multiplexed connection.
pub(super) struct MuxConn {
    writer: WriteHalf,
    outbox: Mutex<Outbox>,
    /// The proxy-wide count of queued bytes; this connection's share is `outbox.queued`'s
    /// length whenever the outbox is unlocked.
    queued_total: Arc<QueuedBytes>,
    /// Wakes the flusher when something was queued.
    flush: Notify,
    pending: Mutex<HashMap<u32, Waiter>>,
    next_id: AtomicU32,
    closed: AtomicBool,
    dead: CancellationToken,
}

impl MuxConn {
    fn spawn(stream: Stream, agent: &AgentConns, span: tracing::Span) -> Arc<Self> {
        let (reader, writer) = stream.into_split();
        let (limits, exit) = (agent.limits, &agent.exit);
        let conn = Arc::new(Self {
            writer,
            outbox: Mutex::new(Outbox::default()),
            queued_total: agent.queued.clone(),
            flush: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            closed: AtomicBool::new(false),
            dead: exit.child_token(),
        });
        m::upstream_open(1.0);
        tokio::spawn(conn.clone().flush_loop().instrument(span.clone()));
        tokio::spawn(
            conn.clone()
                .read_loop(FramedRead::new(reader, FrameCodec::new(limits)))
                .instrument(span),
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
        // What is queued will never be written: free it, and its share of the proxy's cap.
        let mut out = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        self.queued_total.give(out.queued.len());
        out.queued = BytesMut::new();
        drop(out);
        let waiters: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(UpstreamError::SentNoAnswer(io::Error::new(
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
            .map_err(UpstreamError::Unsendable)?;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let _guard = PendingGuard { conn: self, id };
        if !self.is_alive() {
            // Closed between `get` and now: nothing was sent.
            return Err(UpstreamError::NotSent(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "agent connection closed",
            )));
        }
        self.send(frame.as_bytes())?;
        match timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(UpstreamError::SentNoAnswer(io::Error::other(
                "agent connection closed",
            ))),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// Writes a whole frame into the socket now if nothing is queued, else queues it for the
    /// flusher. An error means nothing of the frame was sent.
    fn send(&self, bytes: &[u8]) -> Result<(), UpstreamError> {
        let mut out = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        if out.flushing {
            if out.queued.len() + bytes.len() > MAX_QUEUED
                || !self.queued_total.try_take(bytes.len())
            {
                return Err(UpstreamError::Backlogged);
            }
            out.queued.extend_from_slice(bytes);
            return Ok(());
        }
        let written = match self.writer.try_write(bytes) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) if n > 0 => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            result => {
                let e = result
                    .err()
                    .unwrap_or_else(|| io::ErrorKind::WriteZero.into());
                drop(out);
                debug!(error = %e, "Agent connection write failed");
                self.close();
                return Err(UpstreamError::NotSent(e));
            }
        };
        // The socket is full: the rest goes to the flusher, and later frames behind it.
        self.queued_total.take(bytes.len() - written);
        out.queued.extend_from_slice(&bytes[written..]);
        out.flushing = true;
        self.flush.notify_one();
        Ok(())
    }

    /// Writes out what callers queued, whenever the socket takes more.
    async fn flush_loop(self: Arc<Self>) {
        // One waiter for the connection's life, not a new one per wake-up.
        let dead = self.dead.clone().cancelled_owned();
        tokio::pin!(dead);
        'idle: loop {
            tokio::select! {
                () = &mut dead => break,
                () = self.flush.notified() => {}
            }
            loop {
                tokio::select! {
                    () = &mut dead => break 'idle,
                    r = self.writer.writable() => if let Err(e) = r {
                        debug!(error = %e, "Agent connection not writable");
                        break 'idle;
                    },
                }
                // Not empty: only `send` wakes this loop, when it queues bytes, and only this
                // loop takes them out.
                let mut out = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
                match self.writer.try_write(&out.queued) {
                    Ok(n) if n > 0 => {
                        out.queued.advance(n);
                        self.queued_total.give(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Ok(_) | Err(_) => {
                        debug!("Agent connection write failed");
                        break 'idle;
                    }
                }
                if out.queued.is_empty() {
                    out.flushing = false;
                    if out.queued.capacity() > QUEUE_KEEP {
                        out.queued = BytesMut::new();
                    }
                    continue 'idle;
                }
            }
        }
        self.close();
    }

    async fn read_loop(self: Arc<Self>, mut frames: FramedRead<ReadHalf, FrameCodec>) {
        let dead = self.dead.clone().cancelled_owned();
        tokio::pin!(dead);
        loop {
            let next = tokio::select! {
                () = &mut dead => break,
                next = frames.next() => next,
            };
            match next {
                Some(Ok(frame)) if frame.kind() == FrameKind::Response => {
                    let Some(id) = frame.msgid().and_then(|id| u32::try_from(id).ok()) else {
                        continue;
                    };
                    let waiter = self
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
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
        // Queued by a caller after the close: its share goes back too.
        let out = self
            .outbox
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        self.queued_total.give(out.queued.len());
    }
}

/// Removes a caller's pending entry however its call ends.
struct PendingGuard<'a> {
    conn: &'a MuxConn,
    id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        // Never panic here: a drop may run while unwinding, where a panic aborts the process.
        self.conn
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests;
