//! One downstream (module) connection: read frames, route each request concurrently (several
//! may be in flight: pipelining), write each answer in one write with the module's own msgid.
//!
//! Everything runs in the connection's one task: reads, the RPC futures (a `FuturesUnordered`)
//! and writes, so a connection-per-call module costs one task and one buffer. The task closes
//! the connection on a malformed frame, on a frame that does not complete within the frame
//! read timeout (slow clients), after the idle timeout, or once draining and idle.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::admission::{Admitted, Shed};
use crate::codec::{Frame, FrameCodec, Limits, error_response};
use crate::error::ClientError;
use crate::metrics::{self as m, ConnectionClose, ModuleClose, Uninspected};
use crate::route::Router;

/// While draining, how long a connection that has sent nothing yet may take to start its
/// request (modules write it right after connecting).
const FRESH_CALL_WAIT: Duration = Duration::from_millis(100);

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) limits: Limits,
    pub(crate) max_in_flight: usize,
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

/// A module's connection: a stream that can be made to close with a reset.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin {
    /// Makes the coming close a reset (TCP RST): every module fails open at once on a reset,
    /// while some hang on a clean close. A Unix socket has no reset: it just closes.
    fn reset_on_close(&self);
}

impl Conn for TcpStream {
    fn reset_on_close(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

impl Conn for UnixStream {
    fn reset_on_close(&self) {}
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

/// Serves one connection until it closes.
pub(crate) async fn serve<S: Conn>(mut stream: S, shared: Arc<Shared>, admitted: Admitted) {
    m::connections_open(1.0);
    let result = run(&mut stream, &shared, &admitted).await;
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

async fn run<S: Conn>(
    stream: &mut S,
    shared: &Shared,
    admitted: &Admitted,
) -> Result<(), ClientError> {
    let router = &shared.router;
    let mut codec = FrameCodec::new(shared.limits);
    let mut buf = BytesMut::with_capacity(4096);
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    let mut peer_closed = false;
    let mut stopping = false;
    // Frames read so far: a connection that has sent none yet is a module's fresh call.
    let mut served = 0u64;
    // When the frame now partly in `buf` started arriving.
    let mut frame_started: Option<Instant> = None;
    let mut last_activity = Instant::now();
    // Made once and re-armed: a fresh timer or cancellation waiter per loop turn costs a
    // registration each, several times per RPC.
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    let shed = admitted.entry().wake.notified();
    tokio::pin!(shed);
    let timer = sleep_until(last_activity + shared.idle_timeout);
    tokio::pin!(timer);

    loop {
        // Decode what is buffered, up to the in-flight limit.
        while in_flight.len() < shared.max_in_flight && !buf.is_empty() {
            match codec.decode(&mut buf).map_err(ClientError::Malformed)? {
                Some(frame) => {
                    served += 1;
                    frame_started = (!buf.is_empty()).then(Instant::now);
                    in_flight.push(call(router, frame)?);
                    if stopping && buf.is_empty() {
                        reading = false;
                    }
                }
                None => {
                    // Part of a frame: the module is sending the rest.
                    if reading {
                        frame_started.get_or_insert_with(Instant::now);
                    }
                    break;
                }
            }
        }
        if in_flight.len() >= shared.max_in_flight {
            // What is buffered waits on the proxy's own limit, not on the module: no frame is
            // being read, so no frame-read timer runs (a pipelining module is not a slow
            // sender). It starts again when the limit lets the next frame be decoded.
            frame_started = None;
        }
        admitted.set_busy(in_flight.len());
        // Bytes of a frame not complete yet (or held back by the in-flight limit) count
        // against the proxy-wide budget.
        admitted.set_held(buf.len());
        if !reading && in_flight.is_empty() {
            break;
        }
        let deadline = match frame_started {
            Some(t) => Some(t + shared.frame_read_timeout),
            // Draining: a fresh call's request arrives right after its connect, or never.
            None if stopping && reading => Some(last_activity + FRESH_CALL_WAIT),
            None if in_flight.is_empty() => Some(last_activity + shared.idle_timeout),
            None => None,
        };
        if let Some(at) = deadline
            && timer.deadline() != at
        {
            timer.as_mut().reset(at);
        }
        let can_read = reading && in_flight.len() < shared.max_in_flight;
        let event = tokio::select! {
            biased;
            () = &mut shed => Event::Shed,
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => Event::Answer(answer),
            r = stream.read_buf(&mut buf), if can_read => Event::Read(r),
            () = &mut timer, if deadline.is_some() => Event::Timeout,
            () = &mut stop, if !stopping => Event::Stop,
        };
        match event {
            Event::Answer(bytes) => {
                last_activity = Instant::now();
                admitted.active(last_activity);
                match timeout(shared.write_timeout, stream.write_all(&bytes)).await {
                    Ok(r) => r.map_err(ClientError::Io)?,
                    Err(_) => {
                        // The calls still in flight on it are lost with it.
                        m::uninspected_n(Uninspected::WriteTimeout, in_flight.len() as u64);
                        return Err(ClientError::WriteTimeout);
                    }
                }
            }
            Event::Read(Ok(0)) => {
                // The module closed first, having read every answer it asked for: a FIN back
                // would leave its host a TIME_WAIT socket (and a conntrack entry) for 60 s per
                // call, and a module opening a connection per RPC runs out of ephemeral ports
                // at ~470 RPC/s. A reset ends the connection on both hosts at once; the
                // module's socket is already closed, so nothing reads it (docs/faults.md).
                if in_flight.is_empty() && buf.is_empty() && shared.reset_closed_idle {
                    stream.reset_on_close();
                    m::module_closed(ModuleClose::Reset);
                    return Ok(());
                }
                // A half-close with calls in flight (the module may still read): answer the
                // complete frames it sent (still in `buf` if the in-flight limit held them
                // back), then close with a FIN.
                m::module_closed(ModuleClose::Fin);
                reading = false;
                peer_closed = true;
                frame_started = None;
            }
            Event::Read(Ok(_)) => {
                last_activity = Instant::now();
                admitted.active(last_activity);
                frame_started.get_or_insert(last_activity);
            }
            Event::Read(Err(e)) => return Err(ClientError::Io(e)),
            Event::Timeout => {
                if frame_started.is_some() {
                    return Err(ClientError::SlowFrame);
                }
                m::connection_closed(ConnectionClose::Idle);
                return Ok(());
            }
            Event::Stop => {
                // Draining: answer what is in flight and the frame now arriving, then close. A
                // connection idle between requests closes now; a fresh one (a module's call,
                // accepted just before the listeners closed) still gets its one answer: a
                // Node module whose connection closes without a reply hangs the HTTP request.
                stopping = true;
                last_activity = Instant::now();
                if served > 0 && buf.is_empty() {
                    reading = false;
                }
            }
            Event::Shed => {
                let reason = admitted.entry().shed_reason().unwrap_or(Shed::Idle);
                return Err(ClientError::Shed(reason));
            }
        }
    }
    if !peer_closed {
        // Closing the socket (on return) sends the FIN too; a separate shutdown first is
        // only worth its system call when the module may still be reading.
        let _ = stream.shutdown().await;
    }
    Ok(())
}

/// The work a frame from a module asks for: a call to route, or a call the proxy answers
/// itself because it is not one a module makes (never forwarded to a shared agent
/// connection). A frame without a msgid to answer closes the connection.
fn call(router: &Router, frame: Frame) -> Result<impl Future<Output = Bytes> + '_, ClientError> {
    let problem = frame.call_problem();
    let msgid = match (problem, frame.msgid()) {
        (Some(problem), None) => return Err(ClientError::NotACall(problem)),
        (_, msgid) => msgid.unwrap_or_default(),
    };
    Ok(async move {
        match problem {
            None => router.request(frame).await,
            Some(problem) => {
                m::uninspected(Uninspected::InvalidFrame);
                m::rpc_finished(
                    frame.method().unwrap_or(crate::codec::Method::Other),
                    "invalid_frame",
                    Duration::ZERO,
                );
                error_response(msgid, &format!("sigsci-proxy: invalid call: {problem}"))
            }
        }
    })
}
