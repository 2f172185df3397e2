//! Judging a finished drive against a scenario's `[expect]`: the bounds every run checks
//! (errors, orphaned updates, overflow, agents' problems), PreRequest shares, failed-open and
//! error fractions, and the summary of what went uninspected. Apart from the orchestration so
//! that every mode that runs a scenario (`local`, `cluster`) judges it the same way; and the
//! `FAIL:` and `RESULT` lines every mode ends its output with.

use std::collections::HashSet;

use crate::drive::DriveReport;
use crate::run_args::RunArgs;
use crate::scenario::Expect;

/// Bounds a drive must respect; what `run` and `--compare` both check.
pub(crate) struct DriveBounds {
    /// `None` = unlimited (judged by a fraction or not at all).
    pub(crate) max_errors: Option<u64>,
    /// Refused connections do not count toward `max_errors`.
    pub(crate) allow_refused: bool,
    /// Most orphaned + expired updates; `None` = unlimited.
    pub(crate) max_orphaned: Option<u64>,
}

/// Which bounds stand at zero when neither the command line nor the scenario sets them.
pub(crate) struct ZeroUnlessSet {
    /// Failed calls (never when the scenario bounds them by `max_error_fraction` instead).
    pub(crate) errors: bool,
    /// Orphaned + expired updates.
    pub(crate) orphaned: bool,
}

impl DriveBounds {
    /// The one way every mode builds its bounds: a flag (`--max-errors`, `--max-orphaned`)
    /// overrides the scenario's `[expect]`, which overrides the mode's default (`zero`).
    pub(crate) fn new(run: &RunArgs, expect: &Expect, zero: ZeroUnlessSet) -> DriveBounds {
        let zero_errors = zero.errors && expect.max_error_fraction.is_none();
        DriveBounds {
            max_errors: run
                .max_errors
                .or(expect.max_errors)
                .or(zero_errors.then_some(0)),
            allow_refused: expect.allow_refused,
            max_orphaned: run
                .max_orphaned
                .or(expect.max_orphaned)
                .or(zero.orphaned.then_some(0)),
        }
    }

    /// Every bound `report` broke, and its problems except those of agents in `killed`
    /// (prefixes `agent ADMIN: `; a killed agent's counters cannot be read afterwards).
    pub(crate) fn failures(&self, report: &DriveReport, killed: &[String]) -> Vec<String> {
        let mut failures = Vec::new();
        let max_errors = self.max_errors;
        let counted = if self.allow_refused {
            report.errors_except_refused()
        } else {
            report.total_errors()
        };
        if let Some(max_errors) = max_errors
            && counted > max_errors
        {
            failures.push(format!(
                "{counted} failed calls{} (at most {max_errors} allowed)",
                if self.allow_refused {
                    " other than refused connections"
                } else {
                    ""
                }
            ));
        }
        let lost = report.updates_orphaned + report.updates_expired;
        if let Some(max) = self.max_orphaned
            && lost > max
        {
            failures.push(format!(
                "{lost} orphaned/expired updates (at most {max} allowed)"
            ));
        }
        if report.overflow > 0 {
            failures.push(format!(
                "{} transactions could not start (concurrency bound reached)",
                report.overflow
            ));
        }
        failures.extend(
            report
                .problems
                .iter()
                .filter(|p| !killed.iter().any(|k| p.starts_with(k.as_str())))
                .cloned(),
        );
        failures
    }
}

/// The scenario's share and fraction expectations on a finished drive: every agent's
/// PreRequest share (agents a step changed, `touched`, against `changed_max_share` only),
/// failed-open transactions (count and fraction) and failed calls as a fraction.
pub(crate) fn expectations(
    report: &DriveReport,
    expect: &Expect,
    touched: &HashSet<usize>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let e = expect;
    for (i, a) in report.agents.iter().enumerate() {
        let share = a.prerequest_share;
        let (lo, hi) = if touched.contains(&i) {
            (None, e.changed_max_share)
        } else {
            (e.min_share, e.max_share)
        };
        if lo.is_some_and(|lo| share < lo) || hi.is_some_and(|hi| share > hi) {
            failures.push(format!(
                "agent {i} got {:.1}% of PreRequests (expected {}..{})",
                100.0 * share,
                lo.map_or("0".into(), |v| format!("{:.0}%", 100.0 * v)),
                hi.map_or("100%".into(), |v| format!("{:.0}%", 100.0 * v)),
            ));
        }
    }
    let t = &report.tally;
    if let Some(max) = e.max_failed_open
        && t.failed_open > max
    {
        failures.push(format!(
            "{} transactions failed open (at most {max} allowed)",
            t.failed_open
        ));
    }
    let fraction = |x: u64, of: u64| if of == 0 { 0.0 } else { x as f64 / of as f64 };
    if let Some(max) = e.max_failed_open_fraction {
        let f = fraction(t.failed_open, t.transactions);
        if f > max {
            failures.push(format!(
                "{:.2}% of transactions failed open (at most {:.2}% allowed)",
                100.0 * f,
                100.0 * max
            ));
        }
    }
    if let Some(max) = e.max_error_fraction {
        let calls: u64 = t.methods.values().map(|m| m.calls).sum();
        let failed = if e.allow_refused {
            report.errors_except_refused()
        } else {
            report.total_errors()
        };
        let f = fraction(failed, calls);
        if f > max {
            failures.push(format!(
                "{:.2}% of calls failed{} (at most {:.2}% allowed)",
                100.0 * f,
                if e.allow_refused {
                    " other than refused connections"
                } else {
                    ""
                },
                100.0 * max
            ));
        }
    }
    failures
}

/// Failed-open transactions and failed calls by method and kind: what went uninspected.
pub(crate) fn uninspected_summary(r: &DriveReport) -> String {
    let t = &r.tally;
    let mut parts = Vec::new();
    for (m, mr) in &t.methods {
        let failed: u64 = mr.errors.values().sum();
        if failed > 0 {
            let kinds: Vec<String> = mr
                .errors
                .iter()
                .map(|(k, n)| format!("{k:?} {n}"))
                .collect();
            parts.push(format!("{m} {failed} ({})", kinds.join(", ")));
        }
    }
    format!(
        "{} transactions, {} failed open ({:.2}%){}",
        t.transactions,
        t.failed_open,
        if t.transactions == 0 {
            0.0
        } else {
            100.0 * t.failed_open as f64 / t.transactions as f64
        },
        if parts.is_empty() {
            String::new()
        } else {
            format!("; failed calls: {}", parts.join("; "))
        }
    )
}

/// Judges `window_min_fair`/`window_max_fair`: PreRequests since the last `snapshot` of each
/// agent ready at the end, `(index, count)`, against 1 / (agents counted). Returns the lines to
/// log.
pub(crate) fn window_shares(
    counts: &[(usize, u64)],
    e: &Expect,
    failures: &mut Vec<String>,
) -> Vec<String> {
    let total: u64 = counts.iter().map(|(_, c)| c).sum();
    if counts.is_empty() || total == 0 {
        failures.push("no PreRequests after the snapshot".into());
        return Vec::new();
    }
    let fair = 1.0 / counts.len() as f64;
    let mut shares = Vec::new();
    for (i, c) in counts {
        let share = *c as f64 / total as f64;
        shares.push(format!("{i}: {:.1}%", 100.0 * share));
        let ratio = share / fair;
        if e.window_min_fair.is_some_and(|m| ratio < m)
            || e.window_max_fair.is_some_and(|m| ratio > m)
        {
            failures.push(format!(
                "agent {i} got {:.1}% of PreRequests after the snapshot, {ratio:.2}x its fair share {:.1}% (expected {}..{}x)",
                100.0 * share,
                100.0 * fair,
                e.window_min_fair.unwrap_or(0.0),
                e.window_max_fair.map_or("-".into(), |m| m.to_string()),
            ));
        }
    }
    vec![format!(
        "PreRequest shares of the {} ready agents after the snapshot (fair {:.1}%): {}",
        counts.len(),
        100.0 * fair,
        shares.join(", ")
    )]
}

/// The RESULT line's verdict.
pub(crate) fn verdict(failures: &[String]) -> &'static str {
    if failures.is_empty() { "PASS" } else { "FAIL" }
}

/// Ends a judged run's output the one way every mode does (scripts read it): a `FAIL:` line per
/// failed check, then `RESULT PASS|FAIL: {summary}`. Returns the exit status: 1 if any check
/// failed.
pub(crate) fn print_result(failures: &[String], summary: &str) -> i32 {
    for f in failures {
        println!("FAIL: {f}");
    }
    println!("RESULT {}: {summary}", verdict(failures));
    if failures.is_empty() { 0 } else { 1 }
}

/// A drive's figures as local's and cluster's RESULT lines give them: rate, failed calls
/// (refused ones apart), lost updates, PreRequest latency (`with_latency`), agents' shares.
pub(crate) fn drive_figures(d: &DriveReport, with_latency: bool) -> String {
    let shares: Vec<String> = d
        .agents
        .iter()
        .map(|a| format!("{:.1}", 100.0 * a.prerequest_share))
        .collect();
    let latency = match d.tally.methods.get(crate::rpc::PRE_REQUEST) {
        _ if !with_latency => String::new(),
        pre => format!(
            ", PreRequest p50 {} µs p99 {} µs",
            pre.map_or(0, |m| m.latency_us.p50),
            pre.map_or(0, |m| m.latency_us.p99)
        ),
    };
    format!(
        "{:.0} tx/s, errors {} (refused {}), orphaned+expired {}{latency}, shares % [{}]",
        d.achieved_rate,
        d.total_errors(),
        d.total_errors() - d.errors_except_refused(),
        d.updates_orphaned + d.updates_expired,
        shares.join(" ")
    )
}
