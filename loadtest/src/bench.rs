//! `loadtest bench`: the side-by-side benchmark. One run starts the same agents once and puts
//! each setup in front of them in turn — straight to one agent (the floor), sigsci-proxy,
//! HAProxy `mode tcp` `balance roundrobin` (what a plain Service gives), the same with
//! `defer-accept` (HAProxy at its best here, deferring accepts as sigsci-proxy does), HAProxy
//! `balance source` (the `sessionAffinity: ClientIP` advice) — under the same load: emulated app pods as
//! source addresses 127.0.0.x with a skewed mix (the first pod sends half the transactions).
//! For each setup and round: the balancer's CPU µs per RPC at a fixed rate (from `/proc`), p50
//! and p99 PreRequest latency at that rate, the orphaned fraction of UpdateRequests, max/mean
//! agent load, the maximum closed-loop rate; peak RSS at the end. Rounds are interleaved (the
//! order rotates each round) and reported as medians with their spread. Writes a Markdown
//! report with the machine described and the ratios against direct and each HAProxy setup.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::drive::{self, DriveArgs, DriveReport};
use crate::local::procstat::{self, median};
use crate::processes::ChildProcesses;
use crate::units::{ServiceTime, parse_duration};

mod haproxy;

/// `loadtest bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Simulated agents behind every balancer.
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// The fixed rate (transactions per second) every setup gets for CPU and latency.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Length of each fixed-rate run.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Length of each closed-loop (maximum rate) run.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub max_rate_duration: Duration,
    /// Workers of the closed-loop runs.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Rounds; each runs every setup once, in an order rotated per round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Emulated app pods (source addresses 127.0.0.2, .3, …); the first sends half.
    #[arg(long, default_value_t = 4)]
    pub pods: usize,
    /// Fraction of attack transactions (each followed by an UpdateRequest).
    #[arg(long, default_value_t = 0.2)]
    pub attack_fraction: f64,
    /// The sigsci-proxy binary [default: next to this executable].
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    /// The haproxy binary.
    #[arg(long, default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Extra argument for the proxy (repeatable).
    #[arg(long = "proxy-arg", allow_hyphen_values = true)]
    pub proxy_args: Vec<String>,
    /// Markdown report [default: loadtest/results/bench-<UTC date>.md under the current
    /// directory].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write every measurement as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The setups, in their base order.
const SETUPS: [&str; 5] = [
    "direct",
    "sigsci-proxy",
    "haproxy-roundrobin",
    "haproxy-defer-accept",
    "haproxy-source",
];

/// One setup's measurements in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Balancer CPU per RPC at the fixed rate, µs (`None` for direct).
    pub cpu_us_per_rpc: Option<f64>,
    /// Maximum closed-loop rate, transactions per second.
    pub max_rate: f64,
    /// PreRequest p50 at the fixed rate, µs.
    pub p50_us: u64,
    /// PreRequest p99 at the fixed rate, µs.
    pub p99_us: u64,
    /// Orphaned fraction of UpdateRequests at the fixed rate.
    pub orphaned: f64,
    /// Busiest agent's RPCs over the mean of the agents this setup uses.
    pub max_over_mean_load: f64,
    /// Failed calls at the fixed rate.
    pub errors: u64,
}

/// One setup across rounds.
#[derive(Debug, Clone, Serialize)]
pub struct SetupResult {
    /// Setup name.
    pub name: String,
    /// Every round.
    pub rounds: Vec<Round>,
    /// Peak RSS of the balancer process, KiB (`None` for direct).
    pub peak_rss_kib: Option<u64>,
}

/// A median and the range around it.
#[derive(Debug, Clone, Copy)]
struct Stat {
    med: f64,
    lo: f64,
    hi: f64,
}

fn stat(v: impl Iterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Stat {
        med: median(&mut v),
        lo,
        hi,
    })
}

/// Source addresses of the emulated pods in round-robin order: pod 0 in every other slot
/// (half the transactions), the others once each per cycle.
pub fn skewed_sources(pods: usize) -> Vec<IpAddr> {
    let pod = |i: usize| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8));
    if pods <= 1 {
        return vec![pod(0)];
    }
    (1..pods).flat_map(|i| [pod(0), pod(i)]).collect()
}

/// Runs the benchmark; writes the report; returns the exit status.
pub async fn run_cli(args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(args.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(
        (1..=200).contains(&args.pods),
        "--pods must be within 1..=200"
    );
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new()
        .prefix("loadtest-bench-")
        .tempdir()?;
    let mut procs = ChildProcesses::new(dir.path().join("agents.json"), None);
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let result = measure(&args, &exe, &mut procs, dir.path()).await;
    let mut problems = procs.check_alive();
    problems.extend(procs.stop().await);
    let (results, more) = result?;
    problems.extend(more);
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let md = render(&args, &exe, &results, &load_start, &load_end, &problems).await;
    print!("{md}");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("loadtest/results/bench-{}.md", utc_date())));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &md)?;
    eprintln!("loadtest bench: wrote {}", out.display());
    if let Some(j) = &args.json {
        drive::write_json(j, &results)?;
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// Today's date, UTC, as `YYYY-MM-DD` (from `date`, no date crate needed for one string).
fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "undated".into(), |s| s.trim().to_string())
}

/// A setup to measure: where its calls go, its balancer's pid (none: direct), the agents it
/// uses (their admin addresses).
type Target = (SocketAddr, Option<u32>, Vec<SocketAddr>);

/// Starts the agents and every balancer into `procs`, then measures each setup in rounds.
async fn measure(
    args: &BenchArgs,
    exe: &std::path::Path,
    procs: &mut ChildProcesses,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<SetupResult>, Vec<String>)> {
    procs.spawn_agents(exe, args.agents, &[]).await?;
    let proxy_bin = match &args.proxy_bin {
        Some(b) => b.clone(),
        None => crate::processes::find_proxy_bin(exe)?,
    };
    let proxy = procs.spawn_proxy(&proxy_bin, &args.proxy_args).await?;
    let rr = procs
        .spawn_haproxy_balance(&args.haproxy_bin, dir, "roundrobin")
        .await?;
    let src = procs
        .spawn_haproxy_balance(&args.haproxy_bin, dir, "source")
        .await?;
    let rpcs: Vec<SocketAddr> = procs.agents.iter().map(|a| a.rpc).collect();
    let mut deferred = haproxy::spawn_defer_accept(&args.haproxy_bin, dir, &rpcs).await?;
    let pids: Vec<Option<u32>> = procs.fronts.iter().map(|f| f.child.id()).collect();
    // In the order of SETUPS.
    let all_agents: Vec<SocketAddr> = procs.agents.iter().map(|a| a.admin).collect();
    let setups: Vec<Target> = vec![
        (procs.agents[0].rpc, None, vec![procs.agents[0].admin]),
        (proxy, pids[0], all_agents.clone()),
        (rr, pids[1], all_agents.clone()),
        (deferred.listen, deferred.pid(), all_agents.clone()),
        (src, pids[2], all_agents),
    ];
    eprintln!(
        "loadtest bench: {} agents; {} rounds of: {} tx/s for {:?}, then closed loop x{} for {:?}; pods {:?}",
        args.agents,
        args.rounds,
        args.rate,
        args.duration,
        args.concurrency,
        args.max_rate_duration,
        skewed_sources(args.pods)
    );
    let results = rounds(args, &setups).await?;
    Ok((results, deferred.check_alive().into_iter().collect()))
}

/// A warm-up of each setup, then `rounds` rounds, each setup in turn (the order shifted by
/// one each round): a fixed-rate drive with CPU read around it, then a closed-loop one.
async fn rounds(args: &BenchArgs, setups: &[Target]) -> anyhow::Result<Vec<SetupResult>> {
    let base = DriveArgs {
        rate: args.rate,
        duration: args.duration,
        attack_fraction: args.attack_fraction,
        sources: skewed_sources(args.pods),
        no_progress: true,
        ..DriveArgs::default()
    };
    for (name, (target, _, _)) in SETUPS.iter().zip(setups) {
        eprintln!("loadtest bench: warm-up {name}");
        drive::run(DriveArgs {
            target: (*target).into(),
            duration: Duration::from_secs(1),
            ..base.clone()
        })
        .await?;
    }
    let mut results: Vec<SetupResult> = SETUPS
        .iter()
        .map(|n| SetupResult {
            name: n.to_string(),
            rounds: Vec::new(),
            peak_rss_kib: None,
        })
        .collect();
    for round in 0..args.rounds {
        for k in 0..SETUPS.len() {
            let i = (k + round) % SETUPS.len();
            let (target, pid, admins) = &setups[i];
            let (n, of) = (round + 1, args.rounds);
            eprintln!("loadtest bench: round {n}/{of}: {}", SETUPS[i]);
            let c0 = pid.and_then(procstat::sample);
            let fixed = drive::run(DriveArgs {
                target: (*target).into(),
                agents_admin: admins.clone(),
                ..base.clone()
            })
            .await?;
            let c1 = pid.and_then(procstat::sample);
            let max = drive::run(DriveArgs {
                target: (*target).into(),
                concurrency: Some(args.concurrency),
                duration: args.max_rate_duration,
                app_time: ServiceTime::Fixed(Duration::ZERO),
                ..base.clone()
            })
            .await?;
            results[i].rounds.push(round_of(&fixed, &max, c0, c1));
        }
    }
    for (r, (_, pid, _)) in results.iter_mut().zip(setups) {
        r.peak_rss_kib = pid.and_then(procstat::sample).map(|s| s.peak_rss_kib);
    }
    Ok(results)
}

fn round_of(
    fixed: &DriveReport,
    max: &DriveReport,
    c0: Option<procstat::Sample>,
    c1: Option<procstat::Sample>,
) -> Round {
    let rpcs: u64 = fixed.tally.methods.values().map(|m| m.calls).sum();
    let cpu_us_per_rpc = match (c0, c1) {
        (Some(a), Some(b)) if rpcs > 0 => {
            Some(b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1e6 / rpcs as f64)
        }
        _ => None,
    };
    let pre = fixed.tally.methods.get(crate::rpc::PRE_REQUEST);
    let loads: Vec<f64> = fixed
        .agents
        .iter()
        .filter_map(|a| a.stats.as_ref())
        .map(|s| (s.prerequests + s.updaterequests + s.postrequests) as f64)
        .collect();
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let maxl = loads.iter().copied().fold(0.0, f64::max);
    Round {
        cpu_us_per_rpc,
        max_rate: max.achieved_rate,
        p50_us: pre.map_or(0, |m| m.latency_us.p50),
        p99_us: pre.map_or(0, |m| m.latency_us.p99),
        orphaned: fixed.orphaned_fraction.unwrap_or(0.0),
        max_over_mean_load: if mean > 0.0 { maxl / mean } else { 0.0 },
        errors: fixed.total_errors() + max.total_errors(),
    }
}

/// `median (lo–hi)` with `digits` decimals.
fn fmt_stat(s: Option<Stat>, digits: usize) -> String {
    match s {
        None => "—".into(),
        Some(s) => format!("{:.d$} ({:.d$}–{:.d$})", s.med, s.lo, s.hi, d = digits),
    }
}

async fn command_line(cmd: &str, args: &[&str]) -> String {
    tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// The markdown report: the command and the machine, how the load is made, the setups'
/// table and the ratios of sigsci-proxy to each other setup.
async fn render(
    args: &BenchArgs,
    exe: &std::path::Path,
    results: &[SetupResult],
    load_start: &str,
    load_end: &str,
    problems: &[String],
) -> String {
    let profile = if exe.components().any(|c| c.as_os_str() == "release") {
        "release"
    } else {
        "debug (figures not representative)"
    };
    let mut o = String::new();
    let _ = writeln!(o, "# loadtest bench, {}\n", utc_date());
    let _ = writeln!(
        o,
        "Command: `loadtest bench --agents {} --rate {} --duration {:?} --max-rate-duration {:?} --concurrency {} --rounds {} --pods {}` ({profile} build).\n",
        args.agents,
        args.rate,
        args.duration,
        args.max_rate_duration,
        args.concurrency,
        args.rounds,
        args.pods
    );
    let _ = writeln!(
        o,
        "Machine: {}. Load average at start `{}`, at end `{}`. \
         The machine is a shared 2-vCPU VM: other engineers build on it during runs, so every \
         figure is a median over interleaved rounds with its range (min–max) in brackets, and \
         balancer, agents and load generator all share the same two CPUs.\n",
        machine(args).await,
        load_start.trim(),
        load_end.trim()
    );
    let _ = writeln!(
        o,
        "Load: the module emulator (a connection per call, 100 ms deadline, PreRequest then UpdateRequest for the {:.0}% attack transactions after exp 2 ms app time) from {} emulated app pods as source addresses 127.0.0.2..; the first pod sends half the transactions. \
         `direct` is one agent without a balancer (the floor: its CPU column is empty, its load is one agent); the others balance over the same {} agents. \
         `haproxy-defer-accept` is `haproxy-roundrobin` with `defer-accept` on its bind line (TCP_DEFER_ACCEPT, which sigsci-proxy sets by default).\n",
        100.0 * args.attack_fraction,
        args.pods,
        args.agents
    );
    let stats = setups_table(&mut o, args, results);
    ratios_table(&mut o, results, &stats);
    if !problems.is_empty() {
        let _ = writeln!(o, "\nProblems: {}", problems.join("; "));
    }
    o
}

/// `{model}, {cpus} CPUs, {memory}, {kernel}; {haproxy version}`.
async fn machine(args: &BenchArgs) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let kernel = command_line("uname", &["-sr"]).await;
    let haproxy = command_line(&args.haproxy_bin.display().to_string(), &["-v"]).await;
    format!(
        "{model}, {cpus} CPUs, {}, {kernel}; {haproxy}",
        mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    )
}

/// One row per setup: each figure's median and range over the rounds. Returns the figures.
fn setups_table(
    o: &mut String,
    args: &BenchArgs,
    results: &[SetupResult],
) -> Vec<[Option<Stat>; 6]> {
    let _ = writeln!(
        o,
        "| setup | balancer CPU µs/RPC @ {} tx/s | max closed-loop tx/s | PreRequest p50 µs | p99 µs | orphaned updates | max/mean agent load | peak RSS MiB | errors |",
        args.rate
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    let stats: Vec<[Option<Stat>; 6]> = results
        .iter()
        .map(|r| {
            [
                stat(r.rounds.iter().filter_map(|x| x.cpu_us_per_rpc)),
                stat(r.rounds.iter().map(|x| x.max_rate)),
                stat(r.rounds.iter().map(|x| x.p50_us as f64)),
                stat(r.rounds.iter().map(|x| x.p99_us as f64)),
                stat(r.rounds.iter().map(|x| x.orphaned)),
                stat(r.rounds.iter().map(|x| x.max_over_mean_load)),
            ]
        })
        .collect();
    for (r, s) in results.iter().zip(&stats) {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            fmt_stat(s[0], 1),
            fmt_stat(s[1], 0),
            fmt_stat(s[2], 0),
            fmt_stat(s[3], 0),
            fmt_stat(s[4], 3),
            fmt_stat(s[5], 2),
            r.peak_rss_kib
                .map_or("—".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            r.rounds.iter().map(|x| x.errors).sum::<u64>(),
        );
    }
    stats
}

/// sigsci-proxy's medians over each other setup's.
fn ratios_table(o: &mut String, results: &[SetupResult], stats: &[[Option<Stat>; 6]]) {
    let _ = writeln!(
        o,
        "\nRatios of medians, sigsci-proxy over each other setup (CPU and latency: lower is better; max rate: higher is better):\n"
    );
    let _ = writeln!(
        o,
        "| sigsci-proxy vs | CPU µs/RPC | max tx/s | p50 | p99 |\n|---|---|---|---|---|"
    );
    let proxy = &stats[1];
    for (i, other) in stats.iter().enumerate() {
        if i == 1 {
            continue;
        }
        let ratio = |k: usize| match (proxy[k], other[k]) {
            (Some(a), Some(b)) if b.med > 0.0 => format!("{:.2}", a.med / b.med),
            _ => "—".into(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            results[i].name,
            ratio(0),
            ratio(1),
            ratio(2),
            ratio(3)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pod_sends_half() {
        let s = skewed_sources(4);
        let first = s.iter().filter(|a| **a == s[0]).count();
        assert_eq!((s.len(), first), (6, 3));
        assert_eq!(skewed_sources(1).len(), 1);
        let st = stat([3.0, 1.0, 2.0].into_iter()).unwrap();
        assert_eq!((st.med, st.lo, st.hi), (2.0, 1.0, 3.0));
    }
}
