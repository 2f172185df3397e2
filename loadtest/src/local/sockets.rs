//! The module host's sockets on the netns bed, sampled through the run: a module that opens a
//! connection per RPC runs out of ephemeral ports when every call leaves a TIME_WAIT socket
//! (60 s each; Linux reuses them for new connections only on loopback), and its node's conntrack
//! table fills when every call leaves an entry for 120 s. Both are judged, so that a proxy that
//! closes the wrong way fails the run, not only the modules in production.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::drive::DriveReport;
use crate::netbed::{Bed, Host, Sockets};

/// Most TIME_WAIT sockets a module host may hold at any moment of a run.
pub(crate) const MAX_TIME_WAIT: u64 = 2_000;
/// Most conntrack entries, in seconds of the run's calls (a reset leaves an entry for 10 s in
/// CLOSE; a FIN for 120 s in TIME_WAIT).
pub(crate) const MAX_CONNTRACK_SECONDS: f64 = 20.0;

/// The highest counts seen, and the last.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct SocketsReport {
    pub(crate) max: Sockets,
    pub(crate) end: Sockets,
}

/// A sampler running in the background.
pub(crate) struct Sampler {
    task: JoinHandle<()>,
    seen: Arc<Mutex<SocketsReport>>,
    bed: Arc<Bed>,
    host: Host,
}

/// Samples `host`'s sockets every second until [`Sampler::finish`].
pub(crate) fn sample_every(bed: Arc<Bed>, host: Host) -> Sampler {
    let seen: Arc<Mutex<SocketsReport>> = Default::default();
    let (b, h, s) = (bed.clone(), host.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            sample(&b, &h, &s).await;
        }
    });
    Sampler {
        task,
        seen,
        bed,
        host,
    }
}

async fn sample(bed: &Arc<Bed>, host: &Host, seen: &Arc<Mutex<SocketsReport>>) {
    let (b, h) = (bed.clone(), host.clone());
    if let Ok(Ok(now)) = tokio::task::spawn_blocking(move || b.sockets(&h)).await {
        let mut r = seen.lock().expect("not poisoned");
        r.max.time_wait = r.max.time_wait.max(now.time_wait);
        r.max.conntrack = r.max.conntrack.max(now.conntrack);
        r.end = now;
    }
}

impl Sampler {
    /// Stops sampling after one last sample.
    pub(crate) async fn finish(self) -> SocketsReport {
        self.task.abort();
        sample(&self.bed, &self.host, &self.seen).await;
        *self.seen.lock().expect("not poisoned")
    }
}

impl SocketsReport {
    /// The report line; a failure when the module host held more than the bounds allow.
    pub(crate) fn judge(
        &self,
        drive: &DriveReport,
        duration: Duration,
        failures: &mut Vec<String>,
    ) -> String {
        let rpc_rate = drive.achieved_rpc_rate.max(1.0);
        let conntrack_bound = (MAX_CONNTRACK_SECONDS * rpc_rate).ceil() as u64;
        if self.max.time_wait > MAX_TIME_WAIT {
            failures.push(format!(
                "module host: {} sockets in TIME_WAIT (most allowed {MAX_TIME_WAIT}): a module opening a connection per call would run out of ports",
                self.max.time_wait
            ));
        }
        if self.max.conntrack > conntrack_bound {
            failures.push(format!(
                "module host: {} conntrack entries, more than {MAX_CONNTRACK_SECONDS} s of its {rpc_rate:.0} calls/s ({conntrack_bound})",
                self.max.conntrack
            ));
        }
        format!(
            "module host over {duration:?} at {rpc_rate:.0} calls/s: TIME_WAIT max {} (end {}), conntrack max {} (end {}; bound {conntrack_bound})",
            self.max.time_wait, self.end.time_wait, self.max.conntrack, self.end.conntrack
        )
    }
}
