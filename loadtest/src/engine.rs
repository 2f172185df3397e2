//! The scenario engine that `loadtest local` and `loadtest cluster` share: a scenario's
//! timeline played on a testbed beside the module emulator's drive.
//!
//! A testbed is wherever the steps act — child processes on this host's loopback or on the
//! netns bed ([`crate::local`]), or a cluster's API server ([`crate::cluster`]) — and
//! implements [`Testbed`]: how one step is applied there. Everything else about a scenario is
//! the same on every testbed and lives here once: steps played at their times and logged as
//! `t=… Action who: outcome`, the marks the judge counts failures after, the background steps
//! (bursts, bad clients, floods) collected once the drive ends. A
//! new testbed brings its `apply` and its counters; the timeline, the log and the judging
//! follow.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::drive::{DriveArgs, DriveReport};
use crate::judge::uninspected_summary;
use crate::scenario::{Action, Step};

/// Where a scenario's steps act.
pub trait Testbed {
    /// One step as this testbed planned it (the scenario's step, and what it makes of it).
    type Planned: AsRef<Step>;

    /// Applies one step; returns what it did (a line of the report).
    fn apply(
        &mut self,
        step: &Self::Planned,
    ) -> impl std::future::Future<Output = anyhow::Result<String>>;
}

impl AsRef<Step> for Step {
    fn as_ref(&self) -> &Step {
        self
    }
}

/// What a background step hands back: its log line, and the report of a burst.
pub(crate) type Background = Arc<Mutex<Vec<JoinHandle<(String, Option<DriveReport>)>>>>;

/// Marks recorded while steps run: (what, time into the drive).
pub(crate) type Marks = Arc<Mutex<Vec<(String, Duration)>>>;

/// One run's timeline: when the drive started, what the steps logged and marked, and the
/// background steps still running. Cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct Timeline {
    /// When the drive started.
    pub(crate) start: Instant,
    /// The steps' report lines.
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    /// The steps' marks.
    pub(crate) marks: Marks,
    /// Background steps to collect after the drive.
    pub(crate) background: Background,
}

impl Timeline {
    /// A timeline whose drive starts now.
    pub(crate) fn starting_now() -> Timeline {
        Timeline {
            start: Instant::now(),
            log: Default::default(),
            marks: Default::default(),
            background: Default::default(),
        }
    }

    /// Plays `plan` on `bed`, each step at its time, logging (`tag`: the command's name on
    /// stderr) and marking each; then waits forever: select it against the drive.
    pub(crate) async fn play<T: Testbed>(&self, bed: &mut T, plan: &[T::Planned], tag: &str) {
        for planned in plan {
            let step = planned.as_ref();
            tokio::time::sleep_until(self.start + step.at).await;
            let outcome = bed.apply(planned).await;
            let who = if step.action.is_agent_action() {
                format!(" agent {}", step.agent)
            } else if step.action.is_proxy_action() {
                format!(" proxy {}", step.proxy)
            } else {
                String::new()
            };
            let line = format!(
                "t={:?} {:?}{who}: {}",
                step.at,
                step.action,
                outcome.unwrap_or_else(|e| format!("failed: {e:#}"))
            );
            eprintln!("loadtest {tag}: {line}");
            self.log.lock().expect("not poisoned").push(line);
            self.marks
                .lock()
                .expect("not poisoned")
                .push((format!("{:?}{who}", step.action), step.at));
        }
        std::future::pending::<()>().await;
    }

    /// After the drive: the steps' lines, then each background step's (a burst's with what it
    /// left uninspected), and the marks.
    pub(crate) async fn finish(&self) -> (Vec<String>, Vec<(String, Duration)>) {
        let mut lines = std::mem::take(&mut *self.log.lock().expect("not poisoned"));
        let pending = std::mem::take(&mut *self.background.lock().expect("not poisoned"));
        for h in pending {
            if let Ok((line, burst)) = h.await {
                match burst {
                    Some(b) => lines.push(format!("{line}: {}", uninspected_summary(&b))),
                    None => lines.push(line),
                }
            }
        }
        let marks = std::mem::take(&mut *self.marks.lock().expect("not poisoned"));
        (lines, marks)
    }
}

/// The background steps every testbed runs the same way: extra load and hostile clients beside
/// the drive.
impl Timeline {
    /// `burst`: drives `rate` (or `factor` times the drive's rate) more transactions per second for
    /// `duration` beside the main drive, in the background; its report is collected after the
    /// drive. Returns the step's outcome line.
    pub(crate) fn start_burst(
        &self,
        step: &Step,
        drive: &DriveArgs,
        on: Option<&tokio::runtime::Handle>,
    ) -> String {
        let rate = step
            .rate
            .or(step.factor.map(|f| f * drive.rate))
            .expect("checked at load");
        let duration = step.duration.expect("checked at load");
        let d = DriveArgs {
            rate,
            duration,
            concurrency: None,
            agents_admin: Vec::new(),
            no_progress: true,
            ..drive.clone()
        };
        let burst = async move {
            match crate::drive::run(d).await {
                Ok(r) => (format!("burst {rate} tx/s for {duration:?}"), Some(r)),
                Err(e) => (format!("burst failed: {e:#}"), None),
            }
        };
        let h = match on {
            Some(h) => h.spawn(burst),
            None => tokio::spawn(burst),
        };
        self.background.lock().expect("not poisoned").push(h);
        format!("+{rate} tx/s for {duration:?} started")
    }

    /// `bad-clients` / `conn-flood` against `front`, in the background; their summaries are
    /// collected after the drive. Returns the step's outcome line.
    pub(crate) fn start_abuse(&self, step: &Step, front: SocketAddr) -> String {
        let n = step.count.expect("checked at load");
        let d = step.duration.expect("checked at load");
        let action = step.action;
        let kinds: Vec<String> = step
            .query
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let h = tokio::spawn(async move {
            let summary = if action == Action::BadClients {
                crate::abuse::bad_clients(front, n, d, &kinds).await
            } else {
                crate::abuse::conn_flood(front, n, d).await
            };
            (format!("{action:?} x{n} for {d:?}: {summary}"), None)
        });
        self.background.lock().expect("not poisoned").push(h);
        format!("{n} started for {d:?}")
    }
}

/// Something a step observed at a time into the drive.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    /// What happened.
    pub what: String,
    /// When, from the drive's start, milliseconds.
    pub at_ms: f64,
    /// Failed calls that ended after it (bucket resolution, 100 ms).
    pub errors_after: u64,
    /// Of them, refused connections.
    pub refused_after: u64,
}

impl Mark {
    /// The steps' marks (what, time into the drive), each with the failures the drive saw after it.
    pub(crate) fn all(marks: Vec<(String, Duration)>, report: &DriveReport) -> Vec<Mark> {
        marks
            .into_iter()
            .map(|(what, at)| {
                let (errors_after, refused_after) = report.errors_after(at);
                Mark {
                    what,
                    at_ms: at.as_secs_f64() * 1e3,
                    errors_after,
                    refused_after,
                }
            })
            .collect()
    }
}

/// Prints what the steps did and their marks, as every testbed reports them.
pub(crate) fn print_steps(steps: &[String], marks: &[Mark]) {
    for s in steps {
        println!("step: {s}");
    }
    for m in marks {
        println!(
            "mark: t={:.0}ms {} (then {} failed calls, {} of them refused)",
            m.at_ms, m.what, m.errors_after, m.refused_after
        );
    }
}
