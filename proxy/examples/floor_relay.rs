//! The least a multiplexing RPC proxy can do, as a floor for overhead measurements: accept a
//! module connection, read one frame at a time, rewrite its msgid, write it to one persistent
//! agent connection, match the answer back by msgid, restore the module's msgid, answer.
//! No routing, limits, deadlines, metrics or drain: what `sigsci-proxy` adds over the agent
//! minus what this adds is the cost of those features, the rest is the machine's.
//!
//! ```sh
//! cargo run --release -p sigsci-proxy --example floor_relay -- 127.0.0.1:9997 127.0.0.1:9999
//! loadtest drive --target 127.0.0.1:9999 --compare-target 127.0.0.1:9997 --rate 2000 --duration 10s
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use sigsci_proxy::codec::{Frame, FrameCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Frame>>>>;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (listen, agent) = match args.as_slice() {
        [_, listen, agent] => (listen.clone(), agent.clone()),
        _ => {
            eprintln!("usage: floor_relay LISTEN_ADDR AGENT_ADDR");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        let upstream = TcpStream::connect(&agent).await?;
        upstream.set_nodelay(true)?;
        let (read_half, write_half) = upstream.into_split();
        let write_half = Arc::new(write_half);
        let pending: Pending = Arc::default();
        let next = Arc::new(AtomicU32::new(1));
        {
            let pending = pending.clone();
            tokio::spawn(async move {
                let mut answers = FramedRead::new(read_half, FrameCodec::default());
                while let Some(Ok(answer)) = answers.next().await {
                    let id = answer.msgid().unwrap_or_default() as u32;
                    if let Some(waiter) = pending.lock().expect("lock").remove(&id) {
                        let _ = waiter.send(answer);
                    }
                }
            });
        }
        loop {
            let (stream, _) = listener.accept().await?;
            let (pending, next, write_half) = (pending.clone(), next.clone(), write_half.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut frames = FramedRead::new(read, FrameCodec::default());
                while let Some(Ok(frame)) = frames.next().await {
                    let msgid = frame.msgid().unwrap_or_default();
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let Ok(out) = frame.rewrite(Some(u64::from(id)), None) else {
                        return;
                    };
                    let (tx, rx) = oneshot::channel();
                    pending.lock().expect("lock").insert(id, tx);
                    // Small frames: the socket takes them whole (a real proxy queues the rest).
                    if write_half.try_write(out.as_bytes()).ok() != Some(out.as_bytes().len()) {
                        return;
                    }
                    let Ok(answer) = rx.await else { return };
                    let Ok(back) = answer.rewrite(Some(msgid), None) else {
                        return;
                    };
                    if write.write_all(back.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
