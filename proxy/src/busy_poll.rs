//! Busy polling, for hosts where waking a sleeping CPU is the longest wait of an RPC.
//!
//! Each hop the proxy adds (module → proxy, agent → proxy) wakes its thread from epoll. On a
//! virtual machine an idle vCPU halts, and that wake-up goes through the hypervisor: it can be
//! most of the proxy's added latency (measured against a relay that does nothing but framing:
//! `docs/measurements.md`). With `--busy-poll WINDOW` the thread polls its sockets with a zero
//! timeout instead of sleeping while any RPC is in flight and for WINDOW after the last one
//! finished, so those hops find it awake. Idle, it sleeps as before: the CPU spent grows with
//! the load, up to one core.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::in_flight::InFlightCount;

/// Spins the runtime's poll loop while there is or just was work; returns at `exit`, or at
/// once when `in_flight` keeps no activity record.
pub(crate) async fn run(in_flight: Arc<InFlightCount>, window: Duration, exit: CancellationToken) {
    let Some(activity) = in_flight.activity() else {
        return;
    };
    loop {
        if in_flight.get() > 0 || activity.since_last_finish() < window {
            // sched_yield first lets any other thread waiting for this CPU run (the agent, on
            // a shared node); then the yielding task makes the scheduler poll the I/O driver
            // with a zero timeout before running it again: that poll is the spin.
            std::thread::yield_now();
            tokio::task::yield_now().await;
            activity.spun();
            if exit.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = activity.started() => {}
            () = exit.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(20);
    /// Rounds of the scheduler given to the poller at each step: plenty for it to spin (it
    /// spins once per round while it has work) or to go to sleep.
    const ROUNDS: usize = 50;

    fn spins(in_flight: &InFlightCount) -> u64 {
        in_flight.activity().expect("activity").spins()
    }

    /// Lets the other tasks run `ROUNDS` times without moving the paused clock: a poller that
    /// spins gains spins, one that sleeps does not.
    async fn rounds() {
        for _ in 0..ROUNDS {
            tokio::task::yield_now().await;
        }
    }

    // Paused time and no sleep in the test: while the poller spins the runtime never idles, so
    // the clock moves only by `advance`, and every wait is a bounded number of rounds.
    #[tokio::test(start_paused = true)]
    async fn spins_while_an_rpc_is_in_flight_then_sleeps_once_the_window_is_over() {
        let in_flight = Arc::new(InFlightCount::with_activity());
        let exit = CancellationToken::new();
        let poller = tokio::spawn(run(in_flight.clone(), WINDOW, exit.clone()));

        rounds().await;
        assert_eq!(spins(&in_flight), 0, "spun before any RPC");

        let rpc = in_flight.enter(0);
        rounds().await;
        let during = spins(&in_flight);
        assert!(during > 0, "did not spin while an RPC was in flight");
        drop(rpc);

        tokio::time::advance(WINDOW / 2).await;
        rounds().await;
        assert!(
            spins(&in_flight) > during,
            "stopped spinning within the window"
        );

        tokio::time::advance(WINDOW).await;
        rounds().await;
        let after_window = spins(&in_flight);
        rounds().await;
        assert_eq!(spins(&in_flight), after_window, "kept spinning while idle");

        let _rpc = in_flight.enter(0);
        rounds().await;
        assert!(
            spins(&in_flight) > after_window,
            "did not wake for the next RPC"
        );

        exit.cancel();
        rounds().await;
        assert!(poller.is_finished(), "kept running after exit");
        poller.await.expect("poller ends without panicking");
    }

    #[tokio::test]
    async fn without_an_activity_record_it_returns_at_once() {
        let in_flight = Arc::new(InFlightCount::default());
        let run = run(in_flight, WINDOW, CancellationToken::new());
        let returned = tokio::time::timeout(Duration::from_secs(10), run).await;
        assert!(returned.is_ok(), "kept running with no activity record");
    }
}
