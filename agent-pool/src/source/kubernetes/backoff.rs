//! How long the EndpointSlice watcher waits before retrying after an error.
//!
//! Not kube-runtime's `default_backoff()` (client-go's 0.8 s, doubling to 30 s): a stale agent
//! list costs inspections (requests sent to an agent that is gone, none to one that came), while
//! the load this source puts on the API server is one list + one watch per proxy replica. So the
//! first retry comes after 50–100 ms, and the cap of 0.5–1 s still keeps a dead or failing API
//! server from being hammered: at most about one request per second per replica.
//!
//! Not kube-runtime's `StreamBackoff` either: it resets on every `Ok` item, and the watcher
//! yields `Ok(Event::Init)` *before* each list request, so against an API server that fails
//! every list it would retry at the first delay forever. Here the retry count resets only on
//! real progress (a complete list, or a watch event) followed by a quiet period, or on the
//! first `410 Gone` in a while (the server is up and the remedy, one re-list, is cheap).

use std::time::Duration;

use tokio::time::Instant;

use crate::Backoff;

/// The first retry waits `INITIAL / 2 ..= INITIAL` (50–100 ms).
pub(super) const INITIAL: Duration = Duration::from_millis(100);
/// Each retry doubles the ceiling up to this (retries then every 0.5–1 s: a resynced
/// membership within about a second of the API server's return, at one or two requests a
/// second per proxy replica while it is down).
pub(super) const CAP: Duration = Duration::from_secs(1);
/// The retry count starts over only if the previous error (resp. `410 Gone`) is at least this
/// old, so that a server that answers the list and then fails every watch, or sends `410` on
/// every watch, still sees the delay grow to [`CAP`].
pub(super) const QUIET: Duration = Duration::from_secs(10);

/// Retry delays: exponential from [`INITIAL`] to [`CAP`], with jitter so that the replicas of
/// the proxy do not reconnect to a restarted API server in lockstep.
#[derive(Debug)]
pub(super) struct WatchBackoff {
    /// Counts the errors since the count last started over.
    delays: Backoff,
    /// A complete list or a watch event arrived since the last error.
    progressed: bool,
    last_error: Option<Instant>,
    last_gone: Option<Instant>,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            delays: Backoff::new(INITIAL, CAP),
            progressed: false,
            last_error: None,
            last_gone: None,
        }
    }
}

impl WatchBackoff {
    /// Records progress: a complete list, or an event from the watch.
    pub(super) fn progress(&mut self) {
        self.progressed = true;
    }

    /// The delay before retrying after an error at `now`; `gone` if the error was `410 Gone`.
    pub(super) fn next_delay(&mut self, now: Instant, gone: bool) -> Duration {
        self.record_error(now, gone);
        self.delays.next_jittered()
    }

    /// The upper end of the next delay (its jitter is `ceiling / 2 ..= ceiling`).
    #[cfg(test)]
    fn next_ceiling(&mut self, now: Instant, gone: bool) -> Duration {
        self.record_error(now, gone);
        self.delays.next_delay()
    }

    /// Notes an error at `now`, first starting the count over if the rules above say so.
    fn record_error(&mut self, now: Instant, gone: bool) {
        let quiet = |t: Option<Instant>| t.is_none_or(|t| now.duration_since(t) >= QUIET);
        if (self.progressed && quiet(self.last_error)) || (gone && quiet(self.last_gone)) {
            self.delays.reset();
        }
        self.progressed = false;
        self.last_error = Some(now);
        if gone {
            self.last_gone = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ceilings(b: &mut WatchBackoff, at: &mut Instant, n: usize) -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let c = b.next_ceiling(*at, false);
                *at += c;
                c
            })
            .collect()
    }

    #[test]
    fn doubles_from_100ms_to_a_1s_cap() {
        let (mut b, mut at) = (WatchBackoff::default(), Instant::now());
        assert_eq!(
            ceilings(&mut b, &mut at, 7),
            [100, 200, 400, 800, 1000, 1000, 1000].map(|n| n * MS)
        );
    }

    #[test]
    fn jitter_stays_between_half_and_the_ceiling() {
        let (mut b, now) = (WatchBackoff::default(), Instant::now());
        for _ in 0..200 {
            let d = b.next_delay(now, false);
            assert!((MS..=CAP).contains(&d), "{d:?}");
        }
        let mut b = WatchBackoff::default();
        for _ in 0..200 {
            let d = b.next_delay(now, false);
            assert!(d >= 50 * MS && d <= 100 * MS, "{d:?}");
            b = WatchBackoff::default();
        }
    }

    #[test]
    fn starts_over_after_progress_and_a_quiet_period() {
        let (mut b, mut at) = (WatchBackoff::default(), Instant::now());
        ceilings(&mut b, &mut at, 6);
        b.progress();
        at += QUIET;
        assert_eq!(b.next_ceiling(at, false), INITIAL);
    }

    #[test]
    fn progress_then_an_error_soon_after_keeps_growing() {
        // A server that answers the list and fails the watch every time.
        let (mut b, mut at) = (WatchBackoff::default(), Instant::now());
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            b.progress();
            last = b.next_ceiling(at, false);
            at += last;
        }
        assert_eq!(last, CAP);
    }

    #[test]
    fn a_410_after_an_outage_relists_at_once_but_not_every_time() {
        let (mut b, mut at) = (WatchBackoff::default(), Instant::now());
        ceilings(&mut b, &mut at, 8); // connection refused while the server restarts
        assert_eq!(b.next_ceiling(at, true), INITIAL, "first 410: re-list soon");
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            b.progress();
            at += last.max(MS);
            last = b.next_ceiling(at, true);
        }
        assert_eq!(last, CAP, "a server that sends 410 on every watch");
    }
}
