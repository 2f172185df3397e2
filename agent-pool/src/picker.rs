//! Power of two choices: draw two distinct agents at random from those the snapshot lists as
//! ready, keep the cheaper by latency estimate × (outstanding + 1). O(1) per pick at any pool
//! size: the list is never scanned, except as a last resort when repeated draws found nothing
//! usable (more than half the pool ejected or excluded, which the ejection budget prevents).

use std::cell::Cell;
use std::sync::Arc;

use crate::Agent;
use crate::agent::LazyNow;

/// Costs within this factor of each other count as equal, and the picker keeps its first,
/// uniformly drawn candidate. Without it, two equally fast agents with idle connections are
/// ranked by latency noise: with only two agents P2C compares the same pair every time, and
/// the one a few microseconds faster takes a clearly larger share (figures in
/// `docs/measurements.md`). A real difference (a busy agent: cost × 2 per outstanding
/// request; a 10× slow one) is far outside the margin.
const TIE_MARGIN: f64 = 1.25;

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

/// Two distinct uniform indices below `n` (`2 <= n < 2^32`) from one random word: its high
/// half draws the first, its low half the offset of the second (no division).
#[inline]
pub(crate) fn two_distinct(n: usize, r: u64) -> (usize, usize) {
    debug_assert!(n >= 2);
    let i = ((u128::from(r >> 32) * n as u128) >> 32) as usize;
    let off = ((u128::from(r & 0xffff_ffff) * (n - 1) as u128) >> 32) as usize;
    let j = i + 1 + off;
    (i, if j >= n { j - n } else { j })
}

/// A uniform random index below `n` (`n >= 1`), for baselines and tests.
#[inline]
pub(crate) fn random_index(n: usize) -> usize {
    below(next_u64(), n)
}

/// Picks among `candidates`, skipping `exclude` and, with `need_slot`, agents at their
/// concurrency limit.
#[inline]
pub(crate) fn pick<'a>(
    candidates: &'a [Arc<Agent>],
    now: &mut LazyNow,
    exclude: Option<&Agent>,
    need_slot: bool,
) -> Option<&'a Arc<Agent>> {
    let usable = |a: &Agent, now: &mut LazyNow| {
        exclude.is_none_or(|x| !std::ptr::eq(a, x))
            && (!need_slot || a.has_free_slot())
            && a.usable(now)
    };
    let n = candidates.len();
    match n {
        0 => return None,
        1 => return candidates.first().filter(|a| usable(a, now)),
        _ => {}
    }
    let (i, j) = two_distinct(n, next_u64());
    let mut first: Option<(&Arc<Agent>, f64)> = None;
    for draw in 0..MAX_DRAWS {
        let idx = match draw {
            0 => i,
            1 => j,
            _ => below(next_u64(), n),
        };
        let a = &candidates[idx];
        if first.is_some_and(|(f, _)| Arc::ptr_eq(f, a)) || !usable(a, now) {
            continue;
        }
        let cost = a.cost(now);
        match first {
            None => first = Some((a, cost)),
            // Ties go to the first draw, itself uniform.
            Some((f, fc)) => return Some(if clearly_cheaper(cost, fc) { a } else { f }),
        }
    }
    if let Some((f, _)) = first {
        return Some(f);
    }
    let mut best: Option<(&Arc<Agent>, f64)> = None;
    for a in candidates {
        if usable(a, now) {
            let cost = a.cost(now);
            if best.is_none_or(|(_, bc)| clearly_cheaper(cost, bc)) {
                best = Some((a, cost));
            }
        }
    }
    best.map(|(a, _)| a)
}

/// Whether cost `b` is less than cost `a` by more than [`TIE_MARGIN`].
#[inline]
fn clearly_cheaper(b: f64, a: f64) -> bool {
    b * TIE_MARGIN < a
}
