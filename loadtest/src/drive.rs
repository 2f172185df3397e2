//! The module emulator: drives load exactly as the real modules do — per simulated HTTP
//! request a PreRequest, then an UpdateRequest when a RequestID came back, else a PostRequest
//! for anomalous responses — each on a new connection with a 100 ms whole-call deadline,
//! failing open on any error.
//!
//! Open loop (default): transactions are scheduled on a timetable at `--rate` (dispatched from
//! a dedicated thread, see [`timetable`]), and a PreRequest's latency is measured from its
//! scheduled time, so a stalled target shows up as latency instead of silently lowering the
//! rate (no coordinated omission). Concurrency is bounded by `--max-in-flight`; transactions
//! beyond it are counted as `overflow`. Closed loop: `--concurrency N` workers each run
//! transactions back to back.
//!
//! Paired comparison (`--compare-target`): transactions alternate between two paths (A =
//! `--target`, B = the compare target), a whole transaction on one path, and each path gets its
//! own latency table; both paths see the same machine noise at the same moment, so the
//! difference B − A is fair even on a noisy box.

mod client;
mod inspection;
mod path;
mod payload;
pub mod plot;
pub mod profile;
mod report;
mod timetable;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use crate::addr::RpcAddr;
use crate::agent::AgentStats;
use crate::rpc::{self, Reply};
use crate::units::parse_duration;

pub use client::{CallError, Client, ErrorKind};
pub use inspection::Inspection;
pub use path::{FlowArgs, Split};
use path::{Path, splitmix64};
pub use payload::{ATTACK, PayloadShape};
pub use report::{
    AgentReport, BUCKET, Bucket, DriveReport, Latency, LatencyDiff, MethodReport, PathReport, Tally,
};

/// `loadtest drive` options (also the drive configuration used by the orchestrator).
#[derive(Debug, Clone, Args)]
pub struct DriveArgs {
    /// Where PreRequests go: host:port, unix:/path or /path.
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub target: RpcAddr,
    /// Where UpdateRequests (and PostRequests) go, if not `--target` (path A only with
    /// `--compare-target`).
    #[arg(long)]
    pub update_target: Option<RpcAddr>,
    /// Paired comparison: alternate whole transactions between `--target` (path A) and this
    /// address (path B, all calls), and report each path and the difference B − A.
    #[arg(long)]
    pub compare_target: Option<RpcAddr>,
    /// With `--compare-target`: consecutive transactions per block on one path. 1 pairs single
    /// transactions (both paths at half of `--rate`, the same noise at the same moment); N > 1
    /// runs each path at the full `--rate` in blocks of N, the next block on the other path (a
    /// path's process idles during the other's blocks).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub compare_block: u64,
    /// Transactions (PreRequests) per second, open loop.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to schedule transactions.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Closed loop with this many workers instead of a target rate.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: most transactions in flight; further scheduled ones are counted as overflow.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// Whole-call deadline (dial + write + read), as in the modules.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Fraction of transactions whose URI carries `<script>` (the simulator blocks and flags
    /// them, so they are followed by an UpdateRequest).
    #[arg(long, default_value_t = 0.0)]
    pub attack_fraction: f64,
    /// Fraction of unflagged transactions whose response is anomalous (→ PostRequest).
    #[arg(long, default_value_t = 0.0)]
    pub anomalous_fraction: f64,
    /// Time the simulated app takes between PreRequest and UpdateRequest/PostRequest: fixed
    /// (`5ms`) or exponential with that mean (`exp:2ms`); `0` sends the update at once. Other
    /// modules' calls interleave meanwhile, as in production.
    #[arg(long, default_value = "exp:2ms")]
    pub app_time: crate::units::ServiceTime,
    /// Pipeline calls over a few persistent connections instead of a connection per call.
    #[arg(long)]
    pub persistent: bool,
    /// Persistent connections per target with `--persistent`.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Request headers per request.
    #[arg(long, default_value_t = 12)]
    pub headers: usize,
    /// URI length in bytes.
    #[arg(long, default_value_t = 80)]
    pub uri_len: usize,
    /// Request body size in bytes (0 = GET).
    #[arg(long, default_value_t = 0)]
    pub body_size: usize,
    /// Local source addresses to bind, round-robin (emulates several app pods), e.g.
    /// `127.0.0.1,127.0.0.2`.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// Agents' admin addresses; their /stats are read before and after to report matched,
    /// orphaned and expired updates and each agent's PreRequest share.
    #[arg(long, value_delimiter = ',')]
    pub agents_admin: Vec<SocketAddr>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Open loop at a rate that moves over time instead of `rate` (autoscaling scenarios).
    #[arg(skip)]
    pub profile: Option<Arc<profile::RateProfile>>,
    /// Module sources with rates of their own instead of `rate` (a noisy neighbour): one
    /// timetable each, and each flow's calls reported apart.
    #[arg(skip)]
    pub flows: Vec<FlowArgs>,
    /// Calls split between proxy replicas by weight instead of `target` / `update_target`.
    #[arg(skip)]
    pub split: Option<Split>,
}

impl Default for DriveArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            d: DriveArgs,
        }
        P::parse_from(["drive"]).d
    }
}

impl DriveArgs {
    /// Every problem with these options, named by flag.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut e = Vec::new();
        if self.concurrency.is_none() && !(self.rate.is_finite() && self.rate > 0.0) {
            e.push(format!("--rate {} must be positive", self.rate));
        }
        if self.concurrency == Some(0) {
            e.push("--concurrency must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            e.push("--max-in-flight must be at least 1".into());
        }
        for (name, f) in [
            ("--attack-fraction", self.attack_fraction),
            ("--anomalous-fraction", self.anomalous_fraction),
        ] {
            if !(0.0..=1.0).contains(&f) {
                e.push(format!("{name} {f} is not within 0..=1"));
            }
        }
        if self.timeout.is_zero() {
            e.push("--timeout must be positive".into());
        }
        if self.persistent && self.connections == 0 {
            e.push("--connections must be at least 1".into());
        }
        if (!self.flows.is_empty() || self.split.is_some())
            && (self.compare_target.is_some() || self.concurrency.is_some())
        {
            e.push("flows and split calls are open loop without --compare-target".into());
        }
        if let Some(s) = &self.split
            && (s.targets.len() != s.weights.len() || s.weights.contains(&0))
        {
            e.push("a split needs one weight of at least 1 per target".into());
        }
        if e.is_empty() { Ok(()) } else { Err(e) }
    }
}

/// Everything a transaction needs.
struct Ctx {
    /// Path A (`--target`), then path B (`--compare-target`) if given.
    paths: Vec<Path>,
    shape: PayloadShape,
    args: DriveArgs,
    /// All calls of all paths, and the timeline.
    rec: report::Recorder,
    msgid: AtomicU32,
    seq: AtomicU64,
    /// Decides which path goes first in each pair of transactions.
    pair_seed: u64,
}

impl Ctx {
    fn new(args: DriveArgs) -> Ctx {
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
            rec: report::Recorder::new(),
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
    fn next_transaction(&self) -> (u64, &Path) {
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
    async fn transaction(&self, scheduled: Instant, flow: Option<usize>) {
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
        if !request_id.is_empty() {
            path.flagged.fetch_add(1, Relaxed);
            let upd = self.shape.update_request(request_id, code);
            let _ = self
                .call(
                    seq,
                    path,
                    replica,
                    true,
                    rpc::UPDATE_REQUEST,
                    |id| rpc::encode_request(id, rpc::UPDATE_REQUEST, &upd),
                    Instant::now(),
                )
                .await;
        } else if code >= 300 {
            let post = self.shape.post_request(req, code);
            let _ = self
                .call(
                    seq,
                    path,
                    replica,
                    true,
                    rpc::POST_REQUEST,
                    |id| rpc::encode_request(id, rpc::POST_REQUEST, &post),
                    Instant::now(),
                )
                .await;
        }
    }
}

async fn read_agents(admins: &[SocketAddr]) -> Vec<Result<AgentStats, String>> {
    let reads = admins.iter().map(|a| async move {
        let body = crate::http::get(*a, "/stats")
            .await
            .map_err(|e| format!("{e:#}"))?;
        serde_json::from_slice::<AgentStats>(&body).map_err(|e| format!("bad /stats JSON: {e}"))
    });
    futures::future::join_all(reads).await
}

/// Runs one drive and returns its report. Errors only for invalid options.
pub async fn run(args: DriveArgs) -> anyhow::Result<DriveReport> {
    if let Err(errs) = args.validate() {
        anyhow::bail!("{}", errs.join("; "));
    }
    let ctx = Arc::new(Ctx::new(args.clone()));
    let before = read_agents(&args.agents_admin).await;
    let progress = progress_bar(&args);
    let std_start = std::time::Instant::now();
    let start = Instant::from_std(std_start);
    ctx.rec.set_start(start);
    let end = start + args.duration;
    let tasks = tokio_util::task::TaskTracker::new();
    let ticker = progress.clone().map(|pb| {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(start.elapsed().as_millis() as u64);
                pb.set_message(format!(
                    "{} transactions, {} failed open",
                    sum(&ctx.paths, |p| &p.transactions),
                    sum(&ctx.paths, |p| &p.failed_open)
                ));
            }
        })
    });
    let overflow = match args.concurrency {
        Some(n) => {
            for _ in 0..n {
                let ctx = ctx.clone();
                tasks.spawn(async move {
                    while Instant::now() < end {
                        ctx.transaction(Instant::now(), None).await;
                    }
                });
            }
            0
        }
        None => timetable::open_loop(&ctx, &args, std_start, &tasks).await?,
    };
    tasks.close();
    tasks.wait().await;
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let after = read_agents(&args.agents_admin).await;
    let all = tally(&ctx.paths, &ctx.rec);
    let rpcs: u64 = all.methods.values().map(|m| m.calls).sum();
    let transactions = all.transactions;
    let open_loop = args.concurrency.is_none();
    let mut report = DriveReport {
        target: args.target.to_string(),
        update_target: args
            .update_target
            .as_ref()
            .unwrap_or(&args.target)
            .to_string(),
        mode: format!(
            "{}, {}",
            if open_loop {
                "open-loop"
            } else {
                "closed-loop"
            },
            if args.persistent {
                "persistent"
            } else {
                "per-call"
            }
        ),
        target_rate: if open_loop { args.rate } else { 0.0 },
        elapsed_s: elapsed,
        overflow,
        start_lateness_us: if open_loop { ctx.rec.lateness() } else { None },
        achieved_rate: transactions as f64 / elapsed,
        achieved_rpc_rate: rpcs as f64 / elapsed,
        tally: all,
        paths: Vec::new(),
        flows: Vec::new(),
        inspection: ctx.rec.inspection.report(),
        difference_us: Default::default(),
        agents: Vec::new(),
        updates_matched: 0,
        updates_orphaned: 0,
        updates_expired: 0,
        orphaned_fraction: None,
        problems: Vec::new(),
        timeline: ctx.rec.timeline(),
    };
    report.flows = ctx
        .paths
        .iter()
        .zip(&args.flows)
        .map(|(p, f)| PathReport {
            name: f.name.clone(),
            target: args.target.to_string(),
            update_target: args
                .update_target
                .as_ref()
                .unwrap_or(&args.target)
                .to_string(),
            tally: tally(std::slice::from_ref(p), &p.rec),
        })
        .collect();
    if let Some(b) = &args.compare_target {
        let a_update = args.update_target.as_ref().unwrap_or(&args.target);
        let targets = [(&args.target, a_update), (b, b)];
        let paths = ctx
            .paths
            .iter()
            .zip(["A", "B"])
            .zip(targets)
            .map(|((p, name), (t, u))| PathReport {
                name: name.into(),
                target: t.to_string(),
                update_target: u.to_string(),
                tally: tally(std::slice::from_ref(p), &p.rec),
            });
        report.set_paths(paths.collect());
    }
    if !args.agents_admin.is_empty() {
        let stats = args
            .agents_admin
            .iter()
            .zip(before.into_iter().zip(after))
            .map(|(a, (b, af))| {
                let d = match (b, af) {
                    (Ok(b), Ok(af)) => Ok(af.since(&b)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                (*a, d)
            })
            .collect();
        report.set_agents(stats);
    }
    Ok(report)
}

/// One counter summed over `paths`.
fn sum(paths: &[Path], counter: fn(&Path) -> &AtomicU64) -> u64 {
    paths.iter().map(|p| counter(p).load(Relaxed)).sum()
}

/// The counters of `paths` summed, and the calls `rec` recorded.
fn tally(paths: &[Path], rec: &report::Recorder) -> Tally {
    let methods = rec.methods();
    Tally {
        transactions: sum(paths, |p| &p.transactions),
        flagged: sum(paths, |p| &p.flagged),
        blocked: sum(paths, |p| &p.blocked),
        failed_open: sum(paths, |p| &p.failed_open),
        errors: report::sum_errors(&methods),
        methods,
    }
}

fn progress_bar(args: &DriveArgs) -> Option<indicatif::ProgressBar> {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(args.duration.as_millis() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    Some(pb)
}

/// Writes the report as pretty JSON.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// `loadtest drive`: prints the report, writes JSON if asked. Exit status 2 on invalid options,
/// else 0 (the report says what went wrong).
pub async fn run_cli(args: DriveArgs) -> anyhow::Result<i32> {
    if let Err(errs) = args.validate() {
        for e in errs {
            eprintln!("error: {e}");
        }
        return Ok(2);
    }
    let json = args.json.clone();
    let report = run(args).await?;
    print!("{}", report.to_text());
    if let Some(path) = json {
        write_json(&path, &report)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests;
