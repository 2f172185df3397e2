//! What a drive measured: latency histograms per method, errors by kind, and the agents' own
//! counters; printed as text and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::client::ErrorKind;
use super::inspection::Inspection;
use super::latency::{Latency, LatencyDiff};
use crate::agent::AgentStats;

/// Width of one timeline bucket.
pub const BUCKET: Duration = Duration::from_millis(100);

/// Calls that ended within one [`BUCKET`] of the drive.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bucket {
    /// Calls (all methods) that ended in this bucket.
    pub calls: u64,
    /// Of them, failed (any kind).
    pub errors: u64,
    /// Of the errors, refused connections.
    pub refused: u64,
    /// Sum of PreRequest latencies, microseconds (mean = sum / prerequests).
    pub pre_latency_sum_us: u64,
    /// PreRequests that ended in this bucket.
    pub prerequests: u64,
    /// Highest PreRequest latency, microseconds.
    pub pre_latency_max_us: u64,
}

/// One RPC method's results.
#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    /// Calls made.
    pub calls: u64,
    /// Calls answered without error.
    pub ok: u64,
    /// Failed calls by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Latency (PreRequest: from the scheduled time in open-loop mode).
    pub latency_us: Latency,
}

/// Failed calls of all `methods` by kind.
pub(crate) fn sum_errors(methods: &BTreeMap<String, MethodReport>) -> BTreeMap<ErrorKind, u64> {
    let mut errors = BTreeMap::new();
    for m in methods.values() {
        for (k, v) in &m.errors {
            *errors.entry(*k).or_insert(0) += v;
        }
    }
    errors
}

/// What a set of transactions (a whole drive, or one path of it) did.
#[derive(Debug, Clone, Serialize)]
pub struct Tally {
    /// Transactions started.
    pub transactions: u64,
    /// PreRequests answered with a RequestID.
    pub flagged: u64,
    /// PreRequests answered 406.
    pub blocked: u64,
    /// PreRequests that failed (the module failed open).
    pub failed_open: u64,
    /// Per method.
    pub methods: BTreeMap<String, MethodReport>,
    /// Errors of all methods by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
}

/// One path of a paired comparison (`--compare-target`).
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// `A` (`--target`) or `B` (`--compare-target`).
    pub name: String,
    /// Where its PreRequests went.
    pub target: String,
    /// Where its UpdateRequests and PostRequests went.
    pub update_target: String,
    /// What its transactions did.
    #[serde(flatten)]
    pub tally: Tally,
}

/// One agent's counters over the drive (differences of its `/stats`).
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    /// Its admin address.
    pub admin: SocketAddr,
    /// Counter increase during the drive; `None` if its stats could not be read.
    pub stats: Option<AgentStats>,
    /// Its share of all PreRequests the agents received.
    pub prerequest_share: f64,
    /// Why stats are missing.
    pub error: Option<String>,
}

/// The whole result of one drive.
#[derive(Debug, Clone, Serialize)]
pub struct DriveReport {
    /// PreRequest target.
    pub target: String,
    /// UpdateRequest target.
    pub update_target: String,
    /// `open-loop` or `closed-loop`, `per-call` or `persistent`.
    pub mode: String,
    /// Requested transaction (PreRequest) rate; 0 in closed loop.
    pub target_rate: f64,
    /// Wall time of the drive in seconds (until the last call finished).
    pub elapsed_s: f64,
    /// What the transactions did (all paths).
    #[serde(flatten)]
    pub tally: Tally,
    /// Scheduled transactions skipped because the concurrency bound was reached.
    pub overflow: u64,
    /// Open loop: how far behind its scheduled instant each transaction started, µs (the
    /// dispatcher's timer precision plus the runtime's scheduling delay).
    pub start_lateness_us: Option<Latency>,
    /// Transactions per second achieved.
    pub achieved_rate: f64,
    /// RPCs per second achieved (all methods).
    pub achieved_rpc_rate: f64,
    /// With `--compare-target`: path A, then path B; else empty.
    pub paths: Vec<PathReport>,
    /// With flows (module sources with rates of their own): each flow's calls.
    pub flows: Vec<PathReport>,
    /// Latency of the calls not inspected and of the inspected PreRequests.
    pub inspection: Inspection,
    /// With `--compare-target`: per method both paths carried, B − A.
    pub difference_us: BTreeMap<String, LatencyDiff>,
    /// Per agent, when `--agents-admin` was given.
    pub agents: Vec<AgentReport>,
    /// Sum over agents of UpdateRequests matched / orphaned / expired.
    pub updates_matched: u64,
    /// See `updates_matched`.
    pub updates_orphaned: u64,
    /// See `updates_matched`.
    pub updates_expired: u64,
    /// orphaned / (matched + orphaned + expired), when agents were read.
    pub orphaned_fraction: Option<f64>,
    /// Anything that went wrong beyond the counted errors (e.g. unreadable agent stats).
    pub problems: Vec<String>,
    /// Calls per [`BUCKET`] (100 ms) since the drive started.
    pub timeline: Vec<Bucket>,
}

impl DriveReport {
    /// Total errors of all methods.
    pub fn total_errors(&self) -> u64 {
        self.tally.errors.values().sum()
    }

    /// Errors that were not refused connections.
    pub fn errors_except_refused(&self) -> u64 {
        self.total_errors()
            - self
                .tally
                .errors
                .get(&ErrorKind::Refused)
                .copied()
                .unwrap_or(0)
    }

    /// Errors (all kinds, refused) in calls that ended at or after `t` into the drive
    /// (bucket resolution: from the first bucket starting at or after `t`).
    pub fn errors_after(&self, t: Duration) -> (u64, u64) {
        let first = t.as_nanos().div_ceil(BUCKET.as_nanos()) as usize;
        self.timeline
            .iter()
            .skip(first)
            .fold((0, 0), |(e, r), b| (e + b.errors, r + b.refused))
    }

    /// Fills the paths section and the differences B − A.
    pub(crate) fn set_paths(&mut self, paths: Vec<PathReport>) {
        if let [a, b] = paths.as_slice() {
            self.difference_us = a
                .tally
                .methods
                .iter()
                .filter_map(|(name, ma)| {
                    let mb = b.tally.methods.get(name)?;
                    Some((
                        name.clone(),
                        LatencyDiff::between(&ma.latency_us, &mb.latency_us),
                    ))
                })
                .collect();
        }
        self.paths = paths;
    }

    /// Fills the agents section from stats read before and after.
    pub(crate) fn set_agents(&mut self, agents: Vec<(SocketAddr, Result<AgentStats, String>)>) {
        let total_pre: u64 = agents
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .map(|s| s.prerequests)
            .sum();
        self.agents = agents
            .into_iter()
            .map(|(admin, s)| match s {
                Ok(s) => AgentReport {
                    admin,
                    prerequest_share: if total_pre > 0 {
                        s.prerequests as f64 / total_pre as f64
                    } else {
                        0.0
                    },
                    stats: Some(s),
                    error: None,
                },
                Err(e) => {
                    self.problems.push(format!("agent {admin}: {e}"));
                    AgentReport {
                        admin,
                        stats: None,
                        prerequest_share: 0.0,
                        error: Some(e),
                    }
                }
            })
            .collect();
        let sum = |f: fn(&AgentStats) -> u64| {
            self.agents
                .iter()
                .filter_map(|a| a.stats.as_ref())
                .map(f)
                .sum::<u64>()
        };
        self.updates_matched = sum(|s| s.updates_matched);
        self.updates_orphaned = sum(|s| s.updates_orphaned);
        self.updates_expired = sum(|s| s.updates_expired);
        let all = self.updates_matched + self.updates_orphaned + self.updates_expired;
        self.orphaned_fraction =
            (!self.agents.is_empty() && all > 0).then(|| self.updates_orphaned as f64 / all as f64);
    }

    /// Human-readable report.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "target {}  (updates to {})  mode {}",
            self.target, self.update_target, self.mode
        );
        let _ = writeln!(
            o,
            "transactions {} in {:.2}s: {:.1}/s (target {:.0}/s), {:.1} RPC/s; overflow {}",
            self.tally.transactions,
            self.elapsed_s,
            self.achieved_rate,
            self.target_rate,
            self.achieved_rpc_rate,
            self.overflow
        );
        let _ = writeln!(
            o,
            "flagged {} (blocked {}), failed open {}",
            self.tally.flagged, self.tally.blocked, self.tally.failed_open
        );
        if let Some(l) = &self.start_lateness_us {
            let _ = writeln!(
                o,
                "start behind schedule µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
                l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        write_methods(&mut o, &self.tally.methods);
        let _ = writeln!(o, "errors: {}", errors_text(&self.tally.errors));
        for p in &self.paths {
            let _ = writeln!(
                o,
                "path {} {} (updates to {}): {} transactions, flagged {}, failed open {}, errors: {}",
                p.name,
                p.target,
                p.update_target,
                p.tally.transactions,
                p.tally.flagged,
                p.tally.failed_open,
                errors_text(&p.tally.errors)
            );
            write_methods(&mut o, &p.tally.methods);
        }
        if !self.difference_us.is_empty() {
            let _ = writeln!(o, "{:<20} {:>8} {:>8}  B − A, µs", "method", "p50", "p99");
            for (name, d) in &self.difference_us {
                let _ = writeln!(o, "{name:<20} {:>+8} {:>+8}", d.p50, d.p99);
            }
        }
        if !self.agents.is_empty() {
            self.write_agents(&mut o);
        }
        for p in &self.problems {
            let _ = writeln!(o, "problem: {p}");
        }
        o
    }

    /// The agents' table and the updates' totals.
    fn write_agents(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "{:<22} {:>7} {:>10} {:>8} {:>9} {:>8} {:>8} {:>6}",
            "agent admin", "share", "prereqs", "updates", "matched", "orphaned", "expired", "conns"
        );
        for a in &self.agents {
            match &a.stats {
                Some(s) => {
                    let _ = writeln!(
                        o,
                        "{:<22} {:>6.1}% {:>10} {:>8} {:>9} {:>8} {:>8} {:>6}",
                        a.admin.to_string(),
                        100.0 * a.prerequest_share,
                        s.prerequests,
                        s.updaterequests,
                        s.updates_matched,
                        s.updates_orphaned,
                        s.updates_expired,
                        s.connections
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "{:<22} stats unavailable: {}",
                        a.admin.to_string(),
                        a.error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        let frac = self
            .orphaned_fraction
            .map_or("n/a".to_string(), |f| format!("{f:.3}"));
        let _ = writeln!(
            o,
            "updates: matched {} orphaned {} expired {}; orphaned fraction {frac}",
            self.updates_matched, self.updates_orphaned, self.updates_expired
        );
    }
}

/// The latency table, a line per method.
fn write_methods(o: &mut String, methods: &BTreeMap<String, MethodReport>) {
    let _ = writeln!(
        o,
        "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  latency µs",
        "method", "calls", "errors", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, m) in methods {
        let l = &m.latency_us;
        let errs: u64 = m.errors.values().sum();
        let _ = writeln!(
            o,
            "{name:<20} {:>8} {errs:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            m.calls, l.p50, l.p90, l.p99, l.p999, l.max
        );
    }
}

/// `none` or `Kind=count ...`.
fn errors_text(errors: &BTreeMap<ErrorKind, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k:?}={v}")).collect();
    list.join(" ")
}
