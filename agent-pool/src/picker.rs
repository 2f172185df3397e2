//! Power of two choices: draw two distinct agents at random from those the snapshot lists as
//! ready, keep the cheaper by peak-EWMA latency × (outstanding + 1). O(1) per pick at any pool
//! size: the list is never scanned, except as a last resort when repeated draws found nothing
//! usable (more than half the pool ejected or excluded, which the ejection budget prevents).

use std::cell::Cell;
use std::sync::Arc;

use crate::Agent;

/// Random draws per pick before falling back to a scan.
const MAX_DRAWS: usize = 16;

thread_local! {
    static RNG: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
}

/// wyrand: a fast, statistically good 64-bit generator (not cryptographic; it need not be).
#[inline]
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A uniform index below `n` from a random word (Lemire's multiply-shift, no division).
#[inline]
fn below(r: u64, n: usize) -> usize {
    ((u128::from(r) * n as u128) >> 64) as usize
}

/// Two distinct uniform indices below `n` (`n >= 2`) from two random words.
#[inline]
pub(crate) fn two_distinct(n: usize, r1: u64, r2: u64) -> (usize, usize) {
    debug_assert!(n >= 2);
    let i = below(r1, n);
    let j = (i + 1 + below(r2, n - 1)) % n;
    (i, j)
}

/// A uniform random index below `n` (`n >= 1`), for baselines and tests.
#[inline]
pub(crate) fn random_index(n: usize) -> usize {
    below(next_u64(), n)
}

/// Picks among `candidates` at time `now_ns`, skipping `exclude`.
#[inline]
pub(crate) fn pick<'a>(
    candidates: &'a [Arc<Agent>],
    now_ns: u64,
    exclude: Option<&Agent>,
) -> Option<&'a Arc<Agent>> {
    let usable = |a: &Agent| exclude.is_none_or(|x| !std::ptr::eq(a, x)) && a.usable(now_ns);
    let n = candidates.len();
    match n {
        0 => return None,
        1 => return candidates.first().filter(|a| usable(a)),
        _ => {}
    }
    let (i, j) = two_distinct(n, next_u64(), next_u64());
    let mut first: Option<(&Arc<Agent>, f64)> = None;
    for draw in 0..MAX_DRAWS {
        let idx = match draw {
            0 => i,
            1 => j,
            _ => below(next_u64(), n),
        };
        let a = &candidates[idx];
        if first.is_some_and(|(f, _)| Arc::ptr_eq(f, a)) || !usable(a) {
            continue;
        }
        let cost = a.cost(now_ns);
        match first {
            None => first = Some((a, cost)),
            // Ties go to the first draw, itself uniform.
            Some((f, fc)) => return Some(if cost < fc { a } else { f }),
        }
    }
    if let Some((f, _)) = first {
        return Some(f);
    }
    candidates
        .iter()
        .filter(|a| usable(a))
        .min_by(|a, b| a.cost(now_ns).total_cmp(&b.cost(now_ns)))
}
