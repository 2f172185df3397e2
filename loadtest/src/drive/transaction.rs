//! One simulated HTTP request as a module makes it: PreRequest, the application's time, then
//! UpdateRequest or PostRequest, each call recorded; and the context every transaction of a
//! drive shares (its paths, payload shape, recorder, message ids).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use tokio::time::Instant;

use super::args::DriveArgs;
use super::client::{CallError, Client};
use super::path::{Path, splitmix64};
use super::payload::PayloadShape;
use super::recorder::Recorder;
use crate::addr::RpcAddr;
use crate::rpc::{self, Reply};

/// Everything a transaction needs.
pub(super) struct Ctx {
    /// Path A (`--target`), then path B (`--compare-target`) if given.
    pub(super) paths: Vec<Path>,
    pub(super) shape: PayloadShape,
    pub(super) args: DriveArgs,
    /// All calls of all paths, and the timeline.
    pub(super) rec: Recorder,
    pub(super) msgid: AtomicU32,
    pub(super) seq: AtomicU64,
    /// Decides which path goes first in each pair of transactions.
    pub(super) pair_seed: u64,
}

impl Ctx {
    pub(super) fn new(args: DriveArgs) -> Ctx {
        let client = |addr: &RpcAddr, sources: &[IpAddr]| {
            if args.persistent {
                Client::persistent(addr.clone(), sources.to_vec(), args.connections)
            } else {
                Client::per_call(addr.clone(), sources.to_vec())
            }
        };
        let path = |sources: &[IpAddr]| match &args.split {
            Some(s) => {
                let n = s.targets.len();
                let replicas = (0..n)
                    .map(|r| {
                        let update = &s.targets[(r + 1) % n];
                        (client(&s.targets[r], sources), client(update, sources))
                    })
                    .collect();
                Path::split(replicas, s.weights.clone())
            }
            None => Path::new(
                client(&args.target, sources),
                client(args.update_target.as_ref().unwrap_or(&args.target), sources),
            ),
        };
        let mut paths: Vec<Path> = args.flows.iter().map(|f| path(&f.sources)).collect();
        if paths.is_empty() {
            paths.push(path(&args.sources));
        }
        if let Some(b) = &args.compare_target {
            paths.push(Path::new(
                client(b, &args.sources),
                client(b, &args.sources),
            ));
        }
        Ctx {
            paths,
            shape: PayloadShape {
                headers: args.headers,
                uri_len: args.uri_len,
                body_size: args.body_size,
            },
            args,
            rec: Recorder::new(),
            msgid: AtomicU32::new(rand::random::<u32>() >> 8),
            seq: AtomicU64::new(0),
            pair_seed: rand::random(),
        }
    }

    fn next_msgid(&self) -> u64 {
        // Go's module counts up in a uint32.
        u64::from(self.msgid.fetch_add(1, Relaxed))
    }

    /// The next transaction's sequence number and path. With two paths, each pair of
    /// consecutive transactions (2k, 2k + 1) has one on each path, in an order drawn per pair:
    /// both paths see the same load and noise, and neither always takes the same phase of the
    /// timetable (strict A, B, A, B at 2,000 tx/s puts A on whole milliseconds, where the
    /// runtime's 1 ms timer wakes, and B in between: an A/A run showed B − A of −30 µs at p50).
    /// With `--compare-block N`, the same holds for blocks of N transactions.
    pub(super) fn next_transaction(&self) -> (u64, &Path) {
        let seq = self.seq.fetch_add(1, Relaxed);
        let i = if self.paths.len() == 1 {
            0
        } else {
            let block = seq / self.args.compare_block.max(1);
            ((block ^ splitmix64(self.pair_seed ^ (block >> 1))) & 1) as usize
        };
        (seq, &self.paths[i])
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        seq: u64,
        path: &Path,
        replica: usize,
        update: bool,
        method: &'static str,
        frame_of: impl FnOnce(u64) -> Vec<u8>,
        since: Instant,
    ) -> Result<Reply, CallError> {
        let msgid = self.next_msgid();
        let (pre, upd) = path.clients(replica);
        let client = if update { upd } else { pre };
        let started = Instant::now();
        let r = client
            .call(msgid, frame_of(msgid), self.args.timeout, Some(seq))
            .await;
        let failed = r.is_err();
        self.rec
            .inspection
            .record(method, started.elapsed(), failed);
        if let Err(e) = &r {
            tracing::debug!(method, kind = ?e.kind, detail = %e.detail, "Call failed");
        }
        let (latency, error) = (since.elapsed(), r.as_ref().err().map(|e| e.kind));
        self.rec.record(method, latency, error);
        if self.paths.len() > 1 || !self.args.flows.is_empty() {
            path.rec.record(method, latency, error);
        }
        r
    }

    /// One simulated HTTP request; `scheduled` is when it should have started; `flow` the
    /// path of the flow it belongs to, if the drive has flows.
    pub(super) async fn transaction(&self, scheduled: Instant, flow: Option<usize>) {
        self.rec.record_lateness(scheduled.elapsed());
        let (seq, path) = match flow {
            Some(i) => (self.seq.fetch_add(1, Relaxed), &self.paths[i]),
            None => self.next_transaction(),
        };
        let replica = path.pick();
        path.transactions.fetch_add(1, Relaxed);
        let attack = rand::random::<f64>() < self.args.attack_fraction;
        let anomalous = rand::random::<f64>() < self.args.anomalous_fraction;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let req = self.shape.request(seq, attack, now_ms);
        let pre = self
            .call(
                seq,
                path,
                replica,
                false,
                rpc::PRE_REQUEST,
                |id| rpc::encode_request(id, rpc::PRE_REQUEST, &req),
                scheduled,
            )
            .await;
        let (request_id, code) = match pre {
            Ok(Reply::Out(out)) => {
                if out.WAFResponse == 406 {
                    path.blocked.fetch_add(1, Relaxed);
                }
                (out.RequestID, out.WAFResponse)
            }
            Ok(_) => (String::new(), 200),
            Err(_) => {
                path.failed_open.fetch_add(1, Relaxed);
                (String::new(), 200)
            }
        };
        let code = if anomalous && code == 200 { 500 } else { code };
        let app_time = self.args.app_time.sample();
        if !app_time.is_zero() {
            tokio::time::sleep(app_time).await;
        }
        // The request's second call: its update if flagged, its PostRequest if it failed.
        if !request_id.is_empty() {
            path.flagged.fetch_add(1, Relaxed);
            let upd = self.shape.update_request(request_id, code);
            self.follow_up(seq, path, replica, rpc::UPDATE_REQUEST, &upd)
                .await;
        } else if code >= 300 {
            let post = self.shape.post_request(req, code);
            self.follow_up(seq, path, replica, rpc::POST_REQUEST, &post)
                .await;
        }
    }

    /// An update or PostRequest on the same path and replica as its PreRequest; its latency
    /// from its own start.
    async fn follow_up<T: serde::Serialize>(
        &self,
        seq: u64,
        path: &Path,
        replica: usize,
        method: &'static str,
        params: &T,
    ) {
        let encode = |id| rpc::encode_request(id, method, params);
        let _ = (self.call(seq, path, replica, true, method, encode, Instant::now())).await;
    }
}
