//! `loadtest local --compare`: the proxy's overhead over talking straight to an agent, measured
//! in one run, both paths side by side.
//!
//! 1. After a 1 s paired warm-up, a paired open-loop drive (`--rate`, default 2,000 tx/s, for `--duration`, default 10 s):
//!    transactions alternate between agent 0 (path A, direct) and the proxy (path B), so both
//!    paths see the same machine noise at the same moment and B − A is the proxy's cost. Two
//!    separate runs on this 2-core VM differ by ±50 µs from one run to the next, as much as
//!    the target itself.
//! 2. Each path's maximum rate: closed loop (`--concurrency`, default 16 workers, no app time,
//!    `--max-rate-duration` each, default 3 s), direct, proxy, direct, proxy.
//! 3. The proxy's upstream connects per second during the paired run, from its `/metrics`
//!    (`sigsci_proxy_upstream_connects_total`, all `result` labels): multiplexed mode opens
//!    its agent connections at start-up, so a steady state shows 0/s.
//!
//! PASS needs, for PreRequest and UpdateRequest, p50 overhead ≤ 50 µs and p99 overhead
//! ≤ 300 µs, no upstream connect, and the usual checks (no failed call beyond
//! `--max-errors`, no orphaned update, no overflow, no child died).
//!
//! `--compare-block N` alternates blocks of N transactions instead of single ones: each path
//! then runs at the full `--rate`, and a busy-polling proxy sleeps through the direct blocks
//! instead of spinning on a CPU the direct path needs. Its p50 is as steady as the paired
//! one (A/A at 2,000 tx/s, blocks of 1,000: −7..+6 µs), its p99 is not (±1.8 ms: a hiccup
//! lands in one path's block), so in blocks p99 is reported but not held to its target.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::options::LocalArgs;
use crate::drive::{self, DriveArgs, DriveReport, Latency, LatencyDiff};
use crate::judge::{DriveBounds, ZeroUnlessSet};
use crate::processes::ChildProcesses;
use crate::rpc::{PRE_REQUEST, UPDATE_REQUEST};
use crate::scenario::Expect;
use crate::units::ServiceTime;

/// Target: most p50 overhead (proxy − direct), microseconds.
pub const P50_TARGET_US: i64 = 50;
/// Target: most p99 overhead (proxy − direct), microseconds.
pub const P99_TARGET_US: i64 = 300;
/// The methods whose overhead is held to the targets.
const CHECKED: [&str; 2] = [PRE_REQUEST, UPDATE_REQUEST];
/// The proxy's counter of new upstream connections.
const CONNECTS: &str = "sigsci_proxy_upstream_connects_total";
/// The paired warm-up before the measured run (not reported).
const WARMUP: Duration = Duration::from_secs(1);
/// Closed-loop rounds (direct then proxy in each).
const ROUNDS: usize = 2;

/// The result of `loadtest local --compare`.
#[derive(Debug, Serialize)]
pub struct CompareReport {
    /// Agents started (path A talks to agent 0 only).
    pub agents: usize,
    /// Agent 0's RPC address (path A).
    pub direct: String,
    /// The proxy's RPC address (path B).
    pub proxy: String,
    /// The paired open-loop drive, with both paths and B − A.
    pub paired: DriveReport,
    /// Transactions per block on one path in the paired drive (1: single transactions).
    pub block: u64,
    /// Per checked method: both paths' latency and the overhead.
    pub overhead: Vec<MethodOverhead>,
    /// Maximum rates in closed loop.
    pub max_rate: MaxRate,
    /// Upstream connects during the paired run.
    pub upstream: UpstreamConnects,
    /// Failed targets and checks; empty = PASS.
    pub failures: Vec<String>,
}

/// One method's latency on both paths, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct MethodOverhead {
    /// RPC method.
    pub method: String,
    /// Straight to agent 0.
    pub direct: Latency,
    /// Through the proxy.
    pub proxy: Latency,
    /// Proxy − direct.
    pub overhead_us: LatencyDiff,
}

/// Each path's maximum rate: closed-loop runs, alternating direct and proxy.
#[derive(Debug, Serialize)]
pub struct MaxRate {
    /// Closed-loop workers.
    pub concurrency: usize,
    /// Length of each run, seconds.
    pub run_s: f64,
    /// Transactions per second of each direct run, in order.
    pub direct: Vec<f64>,
    /// Transactions per second of each proxy run, in order.
    pub proxy: Vec<f64>,
    /// Mean of `direct`.
    pub direct_mean: f64,
    /// Mean of `proxy`.
    pub proxy_mean: f64,
    /// `proxy_mean / direct_mean`.
    pub ratio: f64,
    /// The runs in order: (`direct` or `proxy`, report).
    pub runs: Vec<(String, DriveReport)>,
}

/// The proxy's `sigsci_proxy_upstream_connects_total` around the paired run.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConnects {
    /// Before the paired run (all `result` labels summed; 0 if absent).
    pub before: f64,
    /// After it.
    pub after: f64,
    /// Time between the two reads, seconds.
    pub window_s: f64,
    /// (after − before) / window.
    pub per_s: f64,
}

async fn read_connects(admin: SocketAddr) -> anyhow::Result<f64> {
    let body = crate::http::get(admin, "/metrics").await?;
    Ok(crate::prometheus::sum_counter(
        &String::from_utf8_lossy(&body),
        CONNECTS,
    ))
}

/// Runs the measurement and returns its report (with `failures` filled).
pub async fn run(args: &LocalArgs) -> anyhow::Result<CompareReport> {
    let n = args.agents.unwrap_or(1);
    anyhow::ensure!(n >= 1, "--agents must be at least 1");
    let concurrency = args.concurrency.unwrap_or(16);
    anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new()
        .prefix("loadtest-compare-")
        .tempdir()?;
    let mut procs = ChildProcesses::new(dir.path().join("agents.json"), None);
    let result = measure(args, &exe, n, concurrency, &mut procs).await;
    let mut failures = procs.check_alive();
    failures.extend(procs.stop().await);
    let (direct, proxy, paired, max_rate, upstream) = result?;

    // The overhead is measured without a scenario: nothing may fail, nothing may be lost.
    let zero = ZeroUnlessSet {
        errors: true,
        orphaned: true,
    };
    let bounds = DriveBounds::new(&args.run, &Expect::default(), zero);
    failures.extend(bounds.failures(&paired, &[]));
    for (path, r) in &max_rate.runs {
        failures.extend(
            bounds
                .failures(r, &[])
                .into_iter()
                .map(|f| format!("max-rate run via {path}: {f}")),
        );
    }
    let overhead = overheads(&paired, args.compare_block, &mut failures);
    if upstream.after > upstream.before {
        failures.push(format!(
            "{} upstream connects during the paired run ({:.2}/s; 0 expected in steady state)",
            upstream.after - upstream.before,
            upstream.per_s
        ));
    }
    Ok(CompareReport {
        agents: n,
        direct: direct.to_string(),
        proxy: proxy.to_string(),
        paired,
        block: args.compare_block,
        overhead,
        max_rate,
        upstream,
        failures,
    })
}

/// Each checked method's latency on both paths and the overhead, against the targets (p99
/// only when paired by transaction, `block` 1).
fn overheads(paired: &DriveReport, block: u64, failures: &mut Vec<String>) -> Vec<MethodOverhead> {
    let mut overhead = Vec::new();
    for method in CHECKED {
        let (Some(a), Some(b), Some(diff)) = (
            paired
                .paths
                .first()
                .and_then(|p| p.tally.methods.get(method)),
            paired
                .paths
                .get(1)
                .and_then(|p| p.tally.methods.get(method)),
            paired.difference_us.get(method),
        ) else {
            failures.push(format!(
                "{method}: not measured on both paths (UpdateRequests need --attack-fraction > 0)"
            ));
            continue;
        };
        let o = MethodOverhead {
            method: method.into(),
            direct: a.latency_us.clone(),
            proxy: b.latency_us.clone(),
            overhead_us: *diff,
        };
        let short = method.trim_start_matches("RPC.");
        if o.overhead_us.p50 > P50_TARGET_US {
            failures.push(format!(
                "{short} p50 overhead {} µs > {P50_TARGET_US} µs",
                o.overhead_us.p50
            ));
        }
        // In blocks, a machine hiccup lands on one path only: an A/A run moved p99 by up to
        // ±1.8 ms. Only the transaction-paired run holds p99 to its target.
        if block == 1 && o.overhead_us.p99 > P99_TARGET_US {
            failures.push(format!(
                "{short} p99 overhead {} µs > {P99_TARGET_US} µs",
                o.overhead_us.p99
            ));
        }
        overhead.push(o);
    }
    overhead
}

type Measured = (
    SocketAddr,
    SocketAddr,
    DriveReport,
    MaxRate,
    UpstreamConnects,
);

/// Starts the children into `procs` (the caller stops them) and runs the three measurements.
async fn measure(
    args: &LocalArgs,
    exe: &std::path::Path,
    n: usize,
    concurrency: usize,
    procs: &mut ChildProcesses,
) -> anyhow::Result<Measured> {
    procs
        .spawn_agents(exe, n, &args.agent_process_args())
        .await?;
    let proxy = procs
        .spawn_proxy(&args.proxy_bin(exe)?, &args.proxy_args)
        .await?;
    let admin = procs.fronts[0]
        .admin
        .expect("the proxy has an admin address");
    let direct = procs.agents[0].rpc;
    let base = DriveArgs {
        target: direct.into(),
        app_time: args.run.app_time.unwrap_or(DriveArgs::default().app_time),
        attack_fraction: args.run.attack_fraction.unwrap_or(0.2),
        anomalous_fraction: args.run.anomalous_fraction.unwrap_or(0.0),
        persistent: args.persistent,
        sources: args.sources.clone(),
        ..DriveArgs::default()
    };
    let paired_args = DriveArgs {
        compare_target: Some(proxy.into()),
        compare_block: args.compare_block,
        rate: args.run.rate.unwrap_or(2000.0),
        duration: args.run.duration.unwrap_or(Duration::from_secs(10)),
        agents_admin: procs.agents.iter().map(|a| a.admin).collect(),
        ..base.clone()
    };
    eprintln!(
        "loadtest local --compare: {n} agent(s); paired open loop {} tx/s for {:?}, A = agent 0 {direct}, B = proxy {proxy}",
        paired_args.rate, paired_args.duration
    );
    // Warm-up: the proxy opens its agent connections just after /readyz turns 200, and the
    // first calls fill caches on both paths; steady state starts after this.
    drive::run(DriveArgs {
        duration: WARMUP,
        agents_admin: Vec::new(),
        ..paired_args.clone()
    })
    .await?;
    let before = read_connects(admin).await?;
    let t0 = Instant::now();
    let paired = drive::run(paired_args).await?;
    let after = read_connects(admin).await?;
    let window_s = t0.elapsed().as_secs_f64();
    let upstream = UpstreamConnects {
        before,
        after,
        window_s,
        per_s: (after - before) / window_s,
    };

    let max_rate = max_rate(args, &base, [direct, proxy], concurrency).await?;
    Ok((direct, proxy, paired, max_rate, upstream))
}

/// Maximum rate: closed loops of `concurrency` workers on each path in turn, `ROUNDS` times.
/// The workers wait on RPCs only (no app time), else the rate measures the app time instead of
/// the path.
async fn max_rate(
    args: &LocalArgs,
    base: &DriveArgs,
    [direct, proxy]: [SocketAddr; 2],
    concurrency: usize,
) -> anyhow::Result<MaxRate> {
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        for (path, addr) in [("direct", direct), ("proxy", proxy)] {
            eprintln!(
                "loadtest local --compare: max rate, round {}/{ROUNDS}, {path}: closed loop x{concurrency} for {:?}",
                round + 1,
                args.max_rate_duration
            );
            let r = drive::run(DriveArgs {
                target: addr.into(),
                concurrency: Some(concurrency),
                duration: args.max_rate_duration,
                app_time: ServiceTime::Fixed(Duration::ZERO),
                ..base.clone()
            })
            .await?;
            runs.push((path.to_string(), r));
        }
    }
    let rates = |p: &str| -> Vec<f64> {
        runs.iter()
            .filter(|(path, _)| path == p)
            .map(|(_, r)| r.achieved_rate)
            .collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (d, p) = (rates("direct"), rates("proxy"));
    Ok(MaxRate {
        concurrency,
        run_s: args.max_rate_duration.as_secs_f64(),
        direct_mean: mean(&d),
        proxy_mean: mean(&p),
        ratio: mean(&p) / mean(&d),
        direct: d,
        proxy: p,
        runs,
    })
}

impl CompareReport {
    /// The summary: both paths' latency per checked method, the overhead against the
    /// targets, the maximum rates and the upstream connects.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let d = &self.paired;
        let _ = writeln!(
            o,
            "overhead of sigsci-proxy ({}) over agent 0 ({}), {} agent(s); paired open loop {:.0} tx/s for {:.1}s ({}), {}",
            self.proxy,
            self.direct,
            self.agents,
            d.target_rate,
            d.elapsed_s,
            d.mode,
            match self.block {
                1 => "transactions alternating (each path at half the rate)".to_string(),
                n => format!("blocks of {n} transactions alternating (each path at the full rate)"),
            }
        );
        let _ = writeln!(
            o,
            "{:<18} {:<9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  µs",
            "method", "path", "calls", "errors", "p50", "p90", "p99", "p99.9", "max"
        );
        for m in &self.overhead {
            let short = m.method.trim_start_matches("RPC.");
            for (i, (path, l)) in [("direct", &m.direct), ("proxy", &m.proxy)]
                .into_iter()
                .enumerate()
            {
                let (calls, errors) = d
                    .paths
                    .get(i)
                    .and_then(|p| p.tally.methods.get(&m.method))
                    .map_or((0, 0), |r| (r.calls, r.errors.values().sum::<u64>()));
                let _ = writeln!(
                    o,
                    "{short:<18} {path:<9} {calls:>8} {errors:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                );
            }
            let targets = match self.block {
                1 => format!("targets ≤ {P50_TARGET_US}, ≤ {P99_TARGET_US}"),
                _ => format!("target ≤ {P50_TARGET_US}; p99 unchecked in blocks"),
            };
            let _ = writeln!(
                o,
                "{short:<18} {:<9} {:>8} {:>7} {:>+7} {:>7} {:>+7}  ({targets})",
                "overhead", "", "", m.overhead_us.p50, "", m.overhead_us.p99
            );
        }
        let r = &self.max_rate;
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            o,
            "max rate, closed loop x{} for {:.1}s each: direct {} tx/s (mean {:.0}), proxy {} tx/s (mean {:.0}); proxy/direct {:.2}",
            r.concurrency,
            r.run_s,
            list(&r.direct),
            r.direct_mean,
            list(&r.proxy),
            r.proxy_mean,
            r.ratio
        );
        let u = &self.upstream;
        let _ = writeln!(
            o,
            "upstream connects during the paired run: {} in {:.1}s = {:.2}/s (target 0)",
            u.after - u.before,
            u.window_s,
            u.per_s
        );
        o
    }

    /// What the RESULT line says after its verdict.
    pub fn result_summary(&self) -> String {
        let methods: Vec<String> = self
            .overhead
            .iter()
            .map(|m| {
                format!(
                    "{} p50 direct {} proxy {} ({:+}) p99 direct {} proxy {} ({:+})",
                    m.method.trim_start_matches("RPC."),
                    m.direct.p50,
                    m.proxy.p50,
                    m.overhead_us.p50,
                    m.direct.p99,
                    m.proxy.p99,
                    m.overhead_us.p99
                )
            })
            .collect();
        format!(
            "overhead µs {}; max tx/s direct {:.0} proxy {:.0} (ratio {:.2}); upstream connects {:.2}/s",
            methods.join("; "),
            self.max_rate.direct_mean,
            self.max_rate.proxy_mean,
            self.max_rate.ratio,
            self.upstream.per_s
        )
    }
}

/// `loadtest local --compare`: prints the paired drive's report, the summary and the RESULT
/// line; exit status 1 if a target or check failed.
pub async fn run_cli(args: LocalArgs) -> anyhow::Result<i32> {
    let report = run(&args).await?;
    print!("{}", report.paired.to_text());
    println!();
    print!("{}", report.summary());
    if let Some(path) = &args.run.json {
        drive::write_json(path, &report)?;
    }
    Ok(crate::judge::print_result(
        &report.failures,
        &report.result_summary(),
    ))
}
