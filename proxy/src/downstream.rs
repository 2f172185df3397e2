//! One downstream (module) connection: read frames, route each request concurrently (several
//! may be in flight: pipelining), write each answer in one write with the module's own msgid.
//!
//! Everything runs in the connection's one task: reads, the RPC futures (a `FuturesUnordered`)
//! and writes, so a connection-per-call module costs one task and one buffer. The task closes
//! the connection on a malformed frame, on a frame that does not complete within the frame
//! read timeout (slow clients), after the idle timeout, or once draining and idle.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Decoder;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::admission::{Admitted, Shed};
use crate::codec::{Frame, FrameCodec, Limits, error_response};
use crate::error::ClientError;
use crate::metrics::{self as m, ConnectionClose, ModuleClose, Uninspected};
use crate::overload::Flow;
use crate::route::Router;
use crate::stream::Stream;

/// While draining, how long a connection that has sent nothing yet may take to start its
/// request (modules write it right after connecting).
const FRESH_CALL_WAIT: Duration = Duration::from_millis(100);

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) router: Arc<Router>,
    pub(crate) limits: Limits,
    /// Calls of one connection in flight (answers not yet written count) before it reads no
    /// more (`--max-in-flight-per-connection`).
    pub(crate) max_in_flight_per_connection: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) frame_read_timeout: Duration,
    /// How long one answer may take to be written to a module that does not read.
    pub(crate) write_timeout: Duration,
    /// Close with a reset when the module closes a connection with nothing in flight
    /// (`--reset-closed-idle`).
    pub(crate) reset_closed_idle: bool,
    /// Cancelled when the listeners close during a drain: finish in-flight work, then close.
    pub(crate) stop: CancellationToken,
}

/// What woke the connection task, one `select!` round at a time.
enum Event {
    /// A call in flight finished: its answer (or error frame) to write back.
    Answer(Bytes),
    /// The module sent bytes (`Ok(0)`: it closed its side).
    Read(std::io::Result<usize>),
    /// The idle or frame-read deadline passed.
    Timeout,
    /// The proxy drains: finish what is in flight, read nothing new.
    Stop,
    /// Admission took the slot away (the longest idle at the limit, or over the byte budget).
    Shed,
}

/// Serves one connection until it closes; `peer` is the address `accept` returned (TCP).
pub(crate) async fn serve(
    mut stream: Stream,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
    admitted: Admitted,
) {
    m::connections_open(1.0);
    let flow = flow_of(&stream, peer);
    let result = run(&mut stream, &shared, &admitted, &flow).await;
    m::connections_open(-1.0);
    let Err(e) = result else { return };
    if let Some(u) = e.uninspected() {
        m::uninspected(u);
    }
    // An evicted idle connection was counted when admission chose it.
    if e.label() != ConnectionClose::EvictedIdle {
        m::connection_closed(e.label());
    }
    if !matches!(e, ClientError::Io(_)) {
        stream.reset_on_close();
    }
    debug!(error = %e, side = ?e.side(), "Closing connection");
}

/// A connection's read buffer to start with.
const BUF_CAPACITY: usize = 4096;

/// Capacity an emptied read buffer may keep. One that grew for a large frame (up to
/// `--max-frame-bytes`, megabytes) is replaced: otherwise every connection that ever sent one
/// would hold its size while it stays open, counted by no budget (docs/faults.md, "Memory").
const BUF_KEEP: usize = 64 << 10;

/// Where one connection stands between two events.
struct Progress {
    codec: FrameCodec,
    buf: BytesMut,
    /// `buf`'s allocation grew past [`BUF_KEEP`] and frames taken from it share it.
    large_buf: bool,
    /// Still reading requests (not after the module's half-close, nor once drained).
    reading: bool,
    /// The module closed its side.
    peer_closed: bool,
    /// The proxy drains.
    stopping: bool,
    /// Frames read so far: a connection that has sent none yet is a module's fresh call.
    served: u64,
    /// When the frame now partly in `buf` started arriving.
    frame_started: Option<Instant>,
    last_activity: Instant,
}

impl Progress {
    fn new(limits: Limits) -> Self {
        Self {
            codec: FrameCodec::new(limits),
            buf: BytesMut::with_capacity(BUF_CAPACITY),
            large_buf: false,
            reading: true,
            peer_closed: false,
            stopping: false,
            served: 0,
            frame_started: None,
            last_activity: Instant::now(),
        }
    }

    /// The next complete frame buffered, if any; starts the frame-read timer on a partial one.
    fn next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let had = self.buf.capacity();
        let Some(frame) = self
            .codec
            .decode(&mut self.buf)
            .map_err(ClientError::Malformed)?
        else {
            // Part of a frame: the module is sending the rest.
            if self.reading {
                self.frame_started.get_or_insert_with(Instant::now);
            }
            return Ok(None);
        };
        self.served += 1;
        self.frame_started = (!self.buf.is_empty()).then(Instant::now);
        self.large_buf |= had > BUF_KEEP;
        if self.buf.is_empty() && self.large_buf {
            // The frames taken share the buffer's allocation: a fresh buffer lets it go with
            // their answers instead of staying with the connection until it closes.
            self.buf = BytesMut::with_capacity(BUF_CAPACITY);
            self.large_buf = false;
        }
        if self.stopping && self.buf.is_empty() {
            self.reading = false;
        }
        Ok(Some(frame))
    }

    /// When the connection gives up waiting, with `idle` when nothing is in flight.
    fn deadline(&self, shared: &Shared, idle: bool) -> Option<Instant> {
        match self.frame_started {
            Some(t) => Some(t + shared.frame_read_timeout),
            // Draining: a fresh call's request arrives right after its connect, or never.
            None if self.stopping && self.reading => Some(self.last_activity + FRESH_CALL_WAIT),
            None if idle => Some(self.last_activity + shared.idle_timeout),
            None => None,
        }
    }

    /// What is buffered waits on the proxy's own in-flight limit, not on the module: no frame
    /// is being read, so no frame-read timer runs (a pipelining module is not a slow sender).
    /// It starts again when the limit lets the next frame be decoded.
    fn held_back(&mut self) {
        self.frame_started = None;
    }

    /// Tells admission what the connection holds: calls in flight, and the bytes of a frame not
    /// complete yet (or held back by the in-flight limit), which count against the proxy-wide
    /// budget.
    fn account(&self, admitted: &Admitted, in_flight: usize) {
        admitted.set_busy(in_flight);
        admitted.set_held(self.buf.len());
    }

    /// Something was read or written now.
    fn active(&mut self, admitted: &Admitted) {
        self.last_activity = Instant::now();
        admitted.active(self.last_activity);
    }

    /// The module closed its side with `in_flight` calls in flight; `true` when the connection
    /// ends here.
    fn peer_closed(&mut self, stream: &Stream, in_flight: usize, reset: bool) -> bool {
        // The module closed first, having read every answer it asked for: a FIN back would
        // leave its host a TIME_WAIT socket (and a conntrack entry) for 60 s per call, and a
        // module opening a connection per RPC runs out of ephemeral ports at ~470 RPC/s. A
        // reset ends the connection on both hosts at once; the module's socket is already
        // closed, so nothing reads it (docs/faults.md).
        if in_flight == 0 && self.buf.is_empty() && reset {
            stream.reset_on_close();
            m::module_closed(ModuleClose::Reset);
            return true;
        }
        // A half-close with calls in flight (the module may still read): answer the complete
        // frames it sent (still in `buf` if the in-flight limit held them back), then close
        // with a FIN.
        m::module_closed(ModuleClose::Fin);
        self.reading = false;
        self.peer_closed = true;
        self.frame_started = None;
        false
    }

    /// Draining: answer what is in flight and the frame now arriving, then close. A
    /// connection idle between requests closes now; a fresh one (a module's call, accepted
    /// just before the listeners closed) still gets its one answer: a Node module whose
    /// connection closes without a reply hangs the HTTP request.
    fn stop(&mut self) {
        self.stopping = true;
        self.last_activity = Instant::now();
        if self.served > 0 && self.buf.is_empty() {
            self.reading = false;
        }
    }
}

/// One connection's loop: decodes calls up to the in-flight limit, waits for the next event
/// (an answer, bytes, a deadline, the drain, a shed) and handles it, until the connection ends.
async fn run(
    stream: &mut Stream,
    shared: &Shared,
    admitted: &Admitted,
    flow: &Flow,
) -> Result<(), ClientError> {
    let mut at = Progress::new(shared.limits);
    let mut in_flight = FuturesUnordered::new();
    // Answers that came while another was being written, in the order they came.
    let mut answered = VecDeque::new();
    // Made once and re-armed: a fresh timer or cancellation waiter per loop turn costs a
    // registration each, several times per RPC.
    tokio::pin! {
        let stop = shared.stop.cancelled();
        let shed = admitted.entry().wake.notified();
        let timer = sleep_until(at.last_activity + shared.idle_timeout);
    }

    loop {
        // Decode what is buffered, up to the in-flight limit (answers not yet written count).
        while in_flight.len() + answered.len() < shared.max_in_flight_per_connection
            && let Some(frame) = at.next_frame()?
        {
            in_flight.push(call(&shared.router, frame, flow)?);
        }
        let pending = in_flight.len() + answered.len();
        if pending >= shared.max_in_flight_per_connection {
            at.held_back();
        }
        at.account(admitted, pending);
        if !at.reading && pending == 0 {
            break;
        }
        let deadline = at.deadline(shared, pending == 0);
        if let Some(t) = deadline
            && timer.deadline() != t
        {
            timer.as_mut().reset(t);
        }
        let can_read = at.reading && pending < shared.max_in_flight_per_connection;
        let event = tokio::select! {
            biased;
            () = &mut shed => Event::Shed,
            () = std::future::ready(()), if !answered.is_empty() => {
                Event::Answer(answered.pop_front().expect("not empty"))
            }
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => Event::Answer(answer),
            r = stream.read_buf(&mut at.buf), if can_read => Event::Read(r),
            () = &mut timer, if deadline.is_some() => Event::Timeout,
            () = &mut stop, if !at.stopping => Event::Stop,
        };
        let step = on_event(
            event,
            &mut at,
            stream,
            shared,
            admitted,
            &mut in_flight,
            &mut answered,
        );
        if step.await?.is_break() {
            return Ok(());
        }
    }
    if !at.peer_closed {
        // Closing the socket (on return) sends the FIN too; a separate shutdown first is
        // only worth its system call when the module may still be reading.
        let _ = stream.shutdown().await;
    }
    Ok(())
}

/// What one event does to the connection: `Break` when it is over, closed without an error.
async fn on_event<F: Future<Output = Bytes>>(
    event: Event,
    at: &mut Progress,
    stream: &mut Stream,
    shared: &Shared,
    admitted: &Admitted,
    in_flight: &mut FuturesUnordered<F>,
    answered: &mut VecDeque<Bytes>,
) -> Result<ControlFlow<()>, ClientError> {
    match event {
        Event::Answer(bytes) => {
            at.active(admitted);
            let limit = shared.write_timeout;
            write_answer(stream, &bytes, limit, in_flight, answered).await?;
        }
        Event::Read(Ok(0)) => {
            let pending = in_flight.len() + answered.len();
            if at.peer_closed(stream, pending, shared.reset_closed_idle) {
                return Ok(ControlFlow::Break(()));
            }
        }
        Event::Read(Ok(_)) => {
            at.active(admitted);
            at.frame_started.get_or_insert(at.last_activity);
        }
        Event::Read(Err(e)) => return Err(ClientError::Io(e)),
        Event::Timeout if at.frame_started.is_some() => return Err(ClientError::SlowFrame),
        Event::Timeout => {
            m::connection_closed(ConnectionClose::Idle);
            return Ok(ControlFlow::Break(()));
        }
        Event::Stop => at.stop(),
        Event::Shed => {
            let reason = admitted.entry().shed_reason().unwrap_or(Shed::Idle);
            return Err(ClientError::Shed(reason));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Whose calls these are, for the overload queue's fairness: the peer's address (one app pod),
/// or on a Unix socket the peer process. A TCP peer's address is the one `accept` returned:
/// asking the socket again would be one more system call per connection.
fn flow_of(stream: &Stream, peer: Option<SocketAddr>) -> Flow {
    match (&**stream, peer) {
        (Either::Left(_), Some(a)) => Flow::ip(a.ip()),
        (Either::Left(tcp), None) => tcp.peer_addr().map_or(Flow::Unknown, |a| Flow::ip(a.ip())),
        (Either::Right(unix), _) => unix.peer_cred().map_or(Flow::Unknown, |c| Flow::Process {
            pid: c.pid().unwrap_or_default(),
            uid: c.uid(),
        }),
    }
}

/// Writes one answer within `limit`, polling the connection's other calls meanwhile (their
/// answers wait in `answered`): a call is not held on its agent, or in the overload queue, for
/// as long as a slow reader takes. On a timeout the calls still on the connection are lost
/// with it.
async fn write_answer<F: Future<Output = Bytes>>(
    stream: &mut Stream,
    answer: &[u8],
    limit: Duration,
    in_flight: &mut FuturesUnordered<F>,
    answered: &mut VecDeque<Bytes>,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + limit;
    let mut written = 0;
    while written < answer.len() {
        tokio::select! {
            biased;
            // `write` is cancellation safe: a write that did not complete wrote nothing.
            r = stream.write(&answer[written..]) => match r {
                Ok(0) => return Err(ClientError::Io(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) => return Err(ClientError::Io(e)),
            },
            Some(a) = in_flight.next(), if !in_flight.is_empty() => answered.push_back(a),
            () = sleep_until(deadline) => {
                let lost = in_flight.len() + answered.len();
                m::uninspected_n(Uninspected::WriteTimeout, lost as u64);
                return Err(ClientError::WriteTimeout);
            }
        }
    }
    Ok(())
}

/// The work a frame from a module asks for: a call to route, or a call the proxy answers
/// itself because it is not one a module makes (never forwarded to a shared agent
/// connection). A frame without a msgid to answer closes the connection.
fn call<'a>(
    router: &'a Router,
    frame: Frame,
    flow: &'a Flow,
) -> Result<impl Future<Output = Bytes> + 'a, ClientError> {
    let problem = frame.call_problem();
    let msgid = match (problem, frame.msgid()) {
        (Some(problem), None) => return Err(ClientError::NotACall(problem)),
        (_, msgid) => msgid.unwrap_or_default(),
    };
    Ok(async move {
        match problem {
            None => router.request(frame, flow).await,
            Some(problem) => {
                m::uninspected(Uninspected::InvalidFrame);
                m::rpc_finished(
                    frame.method().unwrap_or(crate::codec::Method::Other),
                    m::RpcOutcome::InvalidFrame,
                    Duration::ZERO,
                );
                error_response(msgid, &format!("sigsci-proxy: invalid call: {problem}"))
            }
        }
    })
}

#[cfg(test)]
mod tests;
