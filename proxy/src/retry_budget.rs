//! The retry budget: a failed call may be retried once on another agent, but retries stay a
//! share (`--retry-budget`) of the calls that succeed, so failures across the pool cannot turn
//! into a retry storm that adds load where agents are already failing (the retry budgets of
//! Finagle and linkerd). `route.rs` deposits on each success and withdraws before each retry.

use std::sync::atomic::{AtomicI64, Ordering};

/// Retries allowed as a share of successful first attempts: a token bucket in thousandths of a
/// retry. A success deposits `ratio × 1000`, a retry costs 1000; the balance starts with ten
/// retries so an idle proxy can still retry, and is capped at a hundred so a long quiet
/// period cannot fund a retry storm.
pub(crate) struct RetryBudget {
    balance: AtomicI64,
    deposit: i64,
}

impl RetryBudget {
    const COST: i64 = 1000;
    const START: i64 = 10 * Self::COST;
    const CAP: i64 = 100 * Self::COST;

    /// A budget allowing `ratio` retries per successful first attempt.
    pub(crate) fn new(ratio: f64) -> Self {
        Self {
            balance: AtomicI64::new(Self::START),
            deposit: (ratio * 1000.0).round() as i64,
        }
    }

    /// Credits one successful first attempt. One compare-and-swap, clamped at the cap: a check of the cap followed by an add let the
    /// balance pass it by the last deposit, and by one more per worker thread depositing at once.
    pub(crate) fn deposit(&self) {
        if self.deposit > 0 {
            let _ = self
                .balance
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    (b < Self::CAP).then(|| (b + self.deposit).min(Self::CAP))
                });
        }
    }

    /// Takes one retry from the balance; `false` when it cannot pay for one.
    pub(crate) fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= Self::COST).then_some(b - Self::COST)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget_is_a_share_of_successes() {
        let budget = RetryBudget::new(0.2);
        let mut retries = 0;
        while budget.withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 10, "starts with ten retries");
        for _ in 0..50 {
            budget.deposit();
        }
        let mut retries = 0;
        while budget.withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 10, "50 successes at 20% fund 10 retries");
        let none = RetryBudget::new(0.0);
        for _ in 0..100 {
            none.deposit();
        }
        assert_eq!((0..20).filter(|_| none.withdraw()).count(), 10);
    }

    /// Several worker threads depositing at the cap at once never pass it (a check of the cap
    /// then an add did: 100,600-101,300 thousandths in 3 of 3 runs before the fix).
    #[test]
    fn the_retry_budget_cap_holds_with_several_threads_depositing_at_once() {
        let budget = std::sync::Arc::new(RetryBudget::new(0.7));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = budget.clone();
                std::thread::spawn(move || {
                    let mut highest = 0;
                    for _ in 0..200_000 {
                        b.deposit();
                        let now = b.balance.load(Ordering::Relaxed);
                        highest = highest.max(now);
                        if now >= RetryBudget::CAP {
                            b.withdraw();
                        }
                    }
                    highest
                })
            })
            .collect();
        for t in threads {
            let highest = t.join().unwrap();
            assert!(
                highest <= RetryBudget::CAP,
                "balance {highest} over the cap {}",
                RetryBudget::CAP
            );
        }
    }
}
