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

mod args;
mod client;
mod inspection;
mod latency;
mod path;
mod payload;
pub mod plot;
pub mod profile;
mod recorder;
mod report;
mod timetable;
mod transaction;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::addr::RpcAddr;
use crate::agent::AgentStats;

pub use args::DriveArgs;
pub use client::{CallError, Client, ErrorKind};
pub use inspection::Inspection;
pub use latency::{Latency, LatencyDiff};
use path::Path;
pub use path::{FlowArgs, Split};
pub use payload::{ATTACK, PayloadShape};
pub use report::{AgentReport, BUCKET, Bucket, DriveReport, MethodReport, PathReport, Tally};
use transaction::Ctx;

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
    let ticker = progress.clone().map(|pb| tick(pb, ctx.clone(), start));
    let tasks = tokio_util::task::TaskTracker::new();
    let overflow = match args.concurrency {
        Some(n) => {
            let end = start + args.duration;
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
    let mut report = report_of(&ctx, &args, elapsed, overflow);
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

/// Shows the drive's progress on `pb` until aborted.
fn tick(pb: indicatif::ProgressBar, ctx: Arc<Ctx>, start: Instant) -> tokio::task::JoinHandle<()> {
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
}

/// The report of a finished drive (agents' counters not yet read).
fn report_of(ctx: &Ctx, args: &DriveArgs, elapsed: f64, overflow: u64) -> DriveReport {
    let all = tally(&ctx.paths, &ctx.rec);
    let rpcs: u64 = all.methods.values().map(|m| m.calls).sum();
    let transactions = all.transactions;
    let open_loop = args.concurrency.is_none();
    let mut report = DriveReport {
        target: args.target.to_string(),
        update_target: args.update_target().to_string(),
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
    let path_report = |p: &Path, name: &str, target: &RpcAddr, update: &RpcAddr| PathReport {
        name: name.into(),
        target: target.to_string(),
        update_target: update.to_string(),
        tally: tally(std::slice::from_ref(p), &p.rec),
    };
    report.flows = (ctx.paths.iter().zip(&args.flows))
        .map(|(p, f)| path_report(p, &f.name, &args.target, args.update_target()))
        .collect();
    if let Some(b) = &args.compare_target {
        let targets = [(&args.target, args.update_target()), (b, b)];
        let paths = (ctx.paths.iter().zip(["A", "B"]).zip(targets))
            .map(|((p, name), (t, u))| path_report(p, name, t, u));
        report.set_paths(paths.collect());
    }
    report
}

/// One counter summed over `paths`.
fn sum(paths: &[Path], counter: fn(&Path) -> &AtomicU64) -> u64 {
    paths.iter().map(|p| counter(p).load(Relaxed)).sum()
}

/// The counters of `paths` summed, and the calls `rec` recorded.
fn tally(paths: &[Path], rec: &recorder::Recorder) -> Tally {
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
