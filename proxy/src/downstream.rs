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
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::codec::{CodecError, Frame, FrameCodec, FrameKind, Limits};
use crate::error::ClientError;
use crate::metrics as m;
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
    /// Cancelled when the listeners close during a drain: finish in-flight work, then close.
    pub(crate) stop: CancellationToken,
}

enum Event {
    Answer(Option<Bytes>),
    Read(std::io::Result<usize>),
    Timeout,
    Stop,
}

/// Serves one connection until it closes.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
    m::connections_open(1.0);
    let result = run(&mut stream, &shared).await;
    m::connections_open(-1.0);
    match result {
        Ok(()) => {}
        Err(e) => {
            let reason = match &e {
                ClientError::Malformed(CodecError::FrameTooLarge { .. }) => {
                    m::uninspected(m::Uninspected::FrameTooLarge);
                    "malformed"
                }
                ClientError::Malformed(_) => {
                    m::uninspected(m::Uninspected::InvalidFrame);
                    "malformed"
                }
                ClientError::SlowFrame => {
                    m::uninspected(m::Uninspected::SlowFrame);
                    "slow_frame"
                }
                ClientError::Io(_) => "io",
            };
            m::connection_closed(reason);
            debug!(error = %e, side = ?e.side(), "Closing connection");
        }
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
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
    let timer = sleep_until(last_activity + shared.idle_timeout);
    tokio::pin!(timer);

    loop {
        // Decode what is buffered, up to the in-flight limit.
        while in_flight.len() < shared.max_in_flight && !buf.is_empty() {
            match codec.decode(&mut buf).map_err(ClientError::Malformed)? {
                Some(frame) => {
                    served += 1;
                    frame_started = (!buf.is_empty()).then(Instant::now);
                    if let Some(rpc) = dispatch(router, frame) {
                        in_flight.push(rpc);
                    }
                    if stopping && buf.is_empty() {
                        reading = false;
                    }
                }
                None => break,
            }
        }
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
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => Event::Answer(answer),
            r = stream.read_buf(&mut buf), if can_read => Event::Read(r),
            () = &mut timer, if deadline.is_some() => Event::Timeout,
            () = &mut stop, if !stopping => Event::Stop,
        };
        match event {
            Event::Answer(Some(bytes)) => {
                last_activity = Instant::now();
                stream.write_all(&bytes).await.map_err(ClientError::Io)?;
            }
            Event::Answer(None) => {}
            Event::Read(Ok(0)) => {
                // The module closed its side: answer the complete frames it sent (still in
                // `buf` if the in-flight limit held them back), then close.
                reading = false;
                peer_closed = true;
                frame_started = None;
            }
            Event::Read(Ok(_)) => {
                last_activity = Instant::now();
                frame_started.get_or_insert(last_activity);
            }
            Event::Read(Err(e)) => return Err(ClientError::Io(e)),
            Event::Timeout => {
                if frame_started.is_some() {
                    return Err(ClientError::SlowFrame);
                }
                m::connection_closed("idle");
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
        }
    }
    if !peer_closed {
        // Closing the socket (on return) sends the FIN too; a separate shutdown first is
        // only worth its system call when the module may still be reading.
        let _ = stream.shutdown().await;
    }
    Ok(())
}

/// The work a frame from a module asks for.
fn dispatch(router: &Router, frame: Frame) -> Option<impl Future<Output = Option<Bytes>> + '_> {
    match frame.kind() {
        FrameKind::Request => Some(Either::Request(router, frame).run()),
        FrameKind::Notification => Some(Either::Notification(router, frame).run()),
        FrameKind::Response => {
            debug!("Ignoring a response frame sent by a module");
            None
        }
    }
}

/// One future type for both kinds of work, so they share the `FuturesUnordered`.
enum Either<'a> {
    Request(&'a Router, Frame),
    Notification(&'a Router, Frame),
}

impl<'a> Either<'a> {
    async fn run(self) -> Option<Bytes> {
        match self {
            Either::Request(router, frame) => Some(router.request(frame).await),
            Either::Notification(router, frame) => {
                router.notification(frame).await;
                None
            }
        }
    }
}
