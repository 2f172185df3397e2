//! How the emulator makes an RPC call: like the modules, a new connection per call with one
//! deadline for dial + write + read; or, with `--persistent`, pipelined over a few connections.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::addr::{RpcAddr, Stream};
use crate::rpc::{self, Reply};

/// Why a call failed, as the report groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Connection refused.
    Refused,
    /// No complete answer within the deadline.
    Timeout,
    /// Connection reset or closed before the answer was complete.
    Reset,
    /// The answer was an error response (non-nil error).
    ErrorFrame,
    /// The answer was not a valid response to this call (bytes, msgid or shape).
    MalformedReply,
    /// Any other I/O error (e.g. cannot bind the source address).
    Io,
}

impl ErrorKind {
    fn of(e: &io::Error) -> ErrorKind {
        use io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => ErrorKind::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                ErrorKind::Reset
            }
            K::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }
}

/// A call that failed: the kind and a detail for logs.
#[derive(Debug)]
pub struct CallError {
    /// Grouping for the report.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub detail: String,
}

impl CallError {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> CallError {
        CallError {
            kind,
            detail: detail.into(),
        }
    }
}

impl From<io::Error> for CallError {
    fn from(e: io::Error) -> CallError {
        CallError::new(ErrorKind::of(&e), e.to_string())
    }
}

/// Makes calls to one address.
#[derive(Debug)]
pub enum Client {
    /// A connection per call.
    PerCall {
        /// Where to connect.
        addr: RpcAddr,
        /// Local source addresses, used round-robin by transaction (empty = any).
        sources: Vec<IpAddr>,
        /// Next source index.
        next: AtomicUsize,
    },
    /// Pipelined persistent connections.
    Persistent(Vec<Arc<MuxConn>>, AtomicUsize),
}

impl Client {
    /// A per-call client.
    pub fn per_call(addr: RpcAddr, sources: Vec<IpAddr>) -> Client {
        Client::PerCall {
            addr,
            sources,
            next: AtomicUsize::new(0),
        }
    }

    /// A client multiplexing over `n` persistent connections (source addresses round-robin).
    pub fn persistent(addr: RpcAddr, sources: Vec<IpAddr>, n: usize) -> Client {
        let conns = (0..n.max(1))
            .map(|i| {
                let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                Arc::new(MuxConn {
                    addr: addr.clone(),
                    source,
                    state: tokio::sync::Mutex::new(None),
                })
            })
            .collect();
        Client::Persistent(conns, AtomicUsize::new(0))
    }

    /// Sends `frame` (a request with `msgid`) and returns the decoded answer, within `timeout`.
    /// Per call, the source address is the `transaction`-th (modulo), so every call of one
    /// transaction comes from the same emulated app pod; without it, the next in turn.
    pub async fn call(
        &self,
        msgid: u64,
        frame: Vec<u8>,
        timeout: Duration,
        transaction: Option<u64>,
    ) -> Result<Reply, CallError> {
        let fut = async {
            match self {
                Client::PerCall {
                    addr,
                    sources,
                    next,
                } => {
                    let source = (!sources.is_empty()).then(|| {
                        let k = transaction.map_or_else(
                            || next.fetch_add(1, Relaxed),
                            |t| (t % sources.len() as u64) as usize,
                        );
                        sources[k % sources.len()]
                    });
                    call_once(addr, source, msgid, &frame).await
                }
                Client::Persistent(conns, next) => {
                    let c = &conns[next.fetch_add(1, Relaxed) % conns.len()];
                    c.call(msgid, frame).await
                }
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(CallError::new(
                ErrorKind::Timeout,
                format!("no answer within {timeout:?}"),
            )),
        }
    }
}

fn check_reply(frame: &[u8], msgid: u64) -> Result<Reply, CallError> {
    let (got, error, reply) = rpc::decode_response(frame)
        .map_err(|e| CallError::new(ErrorKind::MalformedReply, e.to_string()))?;
    if got != msgid {
        return Err(CallError::new(
            ErrorKind::MalformedReply,
            format!("msgid {got}, expected {msgid}"),
        ));
    }
    if let Some(e) = error {
        return Err(CallError::new(ErrorKind::ErrorFrame, e));
    }
    Ok(reply)
}

/// One call on a fresh connection, closed afterwards (what the modules do).
async fn call_once(
    addr: &RpcAddr,
    source: Option<IpAddr>,
    msgid: u64,
    frame: &[u8],
) -> Result<Reply, CallError> {
    let mut s = Stream::connect(addr, source).await?;
    s.write_all(frame).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match rpc::frame_len(&buf, rpc::MAX_FRAME_BYTES) {
            Ok(Some(n)) => return check_reply(&buf[..n], msgid),
            Ok(None) => {}
            Err(e) => return Err(CallError::new(ErrorKind::MalformedReply, e.to_string())),
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(CallError::new(
                ErrorKind::Reset,
                "connection closed before the answer",
            ));
        }
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, CallError>>>>>;

/// One persistent connection carrying many calls, answers matched by msgid.
#[derive(Debug)]
pub struct MuxConn {
    addr: RpcAddr,
    source: Option<IpAddr>,
    state: tokio::sync::Mutex<Option<(mpsc::Sender<Vec<u8>>, Waiters)>>,
}

static MUX_IDS: AtomicU64 = AtomicU64::new(0);

impl MuxConn {
    async fn call(&self, msgid: u64, frame: Vec<u8>) -> Result<Reply, CallError> {
        let (tx, waiters) = self.connected().await?;
        let (otx, orx) = oneshot::channel();
        waiters.lock().expect("not poisoned").insert(msgid, otx);
        if tx.send(frame).await.is_err() {
            waiters.lock().expect("not poisoned").remove(&msgid);
            return Err(CallError::new(ErrorKind::Reset, "connection closed"));
        }
        let answer = orx
            .await
            .map_err(|_| CallError::new(ErrorKind::Reset, "connection closed"))??;
        check_reply(&answer, msgid)
    }

    async fn connected(&self) -> Result<(mpsc::Sender<Vec<u8>>, Waiters), CallError> {
        let mut state = self.state.lock().await;
        if let Some((tx, w)) = state.as_ref()
            && !tx.is_closed()
        {
            return Ok((tx.clone(), w.clone()));
        }
        let stream = Stream::connect(&self.addr, self.source).await?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let waiters: Waiters = Arc::default();
        let _id = MUX_IDS.fetch_add(1, Relaxed);
        let w = waiters.clone();
        tokio::spawn(async move {
            let writer = async {
                while let Some(buf) = rx.recv().await {
                    wr.write_all(&buf).await?;
                }
                io::Result::Ok(())
            };
            let reader = async {
                let mut buf = BytesMut::with_capacity(16 * 1024);
                loop {
                    while let Some(n) = rpc::frame_len(&buf, rpc::MAX_FRAME_BYTES)
                        .map_err(|e| CallError::new(ErrorKind::MalformedReply, e.to_string()))?
                    {
                        let frame = buf.split_to(n);
                        let msgid = match rpc::envelope(&frame) {
                            Ok(rpc::Envelope::Response { msgid, .. }) => msgid,
                            _ => {
                                return Err(CallError::new(
                                    ErrorKind::MalformedReply,
                                    "not a response",
                                ));
                            }
                        };
                        if let Some(tx) = w.lock().expect("not poisoned").remove(&msgid) {
                            let _ = tx.send(Ok(frame.to_vec()));
                        }
                    }
                    if rd.read_buf(&mut buf).await? == 0 {
                        return Err::<(), CallError>(CallError::new(
                            ErrorKind::Reset,
                            "connection closed",
                        ));
                    }
                }
            };
            let err = tokio::select! {
                r = writer => match r { Ok(()) => CallError::new(ErrorKind::Reset, "closed"), Err(e) => e.into() },
                r = reader => r.err().unwrap_or_else(|| CallError::new(ErrorKind::Reset, "closed")),
            };
            for (_, tx) in w.lock().expect("not poisoned").drain() {
                let _ = tx.send(Err(CallError::new(err.kind, err.detail.clone())));
            }
        });
        *state = Some((tx.clone(), waiters.clone()));
        Ok((tx, waiters))
    }
}
