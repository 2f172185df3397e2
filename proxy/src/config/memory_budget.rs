//! The memory budget: `--max-connections`, `--max-partial-bytes` and `--max-in-flight-bytes`
//! derived from the memory limit (`cgroup.rs`), and the check that explicit settings fit in it.
//!
//! Why: each of the three bounds one kind of memory (open connections, partly received frames,
//! requests in flight), and together they bound what any input can make the proxy hold. Their
//! table defaults (20,000 connections, 64 MiB, 64 MiB) add up to more than the manifests'
//! 256 MiB container limit, so a flood would meet the kernel's OOM killer, which resets every
//! module connection at once, before any of the proxy's own limits, which shed only the
//! offenders. Under a limit, each option left unset gets a share of it instead; one set
//! explicitly wins, but a configuration whose worst case passes the limit is refused at start-up
//! (exit 2, like every invalid configuration: under a rolling update the new pods never become
//! ready and the old ones keep serving, where a warning would be read after the OOM kill).
//!
//! The worst case ([`worst_case`]) is a measured baseline, a cost per connection and a cost per
//! budgeted byte (docs/faults.md, "Memory", has the figures), the in-flight budget counted twice:
//! the bytes queued to agents that read slowly are capped at it as well
//! (`upstream/queued.rs`). Without a limit ("max") the table defaults stand.

use super::{Config, Options, Problem};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// What the proxy uses with nothing open: runtime, code, metrics, agent pool and connections
/// (about 8 MiB resident at 2,000 RPC/s), with room for the allocator's fragmentation.
pub const BASELINE: u64 = 24 * MIB;

/// One open module connection: its task and buffers (about 9 KiB of heap) plus the kernel's
/// socket, which a cgroup v2 limit counts too.
pub const CONNECTION_COST: u64 = 16 * KIB;

/// Memory per budgeted byte, measured (docs/faults.md, "Memory"): 24 slow senders refilling a
/// 30 MiB partial-frame budget as fast as it sheds them took 80 MiB. The bytes of a connection
/// being shed still take memory until its task lets go, buffers grow by doubling, and the
/// allocator keeps freed pages until the next trim.
pub const BYTE_COST: u64 = 3;

/// The three limits the budget sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-partial-bytes`.
    pub max_partial_bytes: usize,
    /// `--max-in-flight-bytes`.
    pub max_in_flight_bytes: usize,
}

impl Budget {
    /// The table defaults: the budget without a memory limit.
    fn table() -> Self {
        Self::of(&Config::default())
    }

    /// The three limits of a configuration.
    pub fn of(c: &Config) -> Self {
        Self {
            max_connections: c.max_connections,
            max_partial_bytes: c.max_partial_bytes,
            max_in_flight_bytes: c.max_in_flight_bytes,
        }
    }
}

/// The budget for a memory limit of `limit` bytes: 7/8 of it (the rest is margin for what the
/// estimate does not see) less [`BASELINE`], two fifths to connections, three tenths to
/// partly received frames and three tenths to requests in flight and queued to agents (half
/// each), never above the table defaults and each byte budget at least one whole frame of
/// `max_frame_bytes`.
pub fn derive(limit: u64, max_frame_bytes: usize) -> Budget {
    let table = Budget::table();
    let usable = (limit / 8 * 7).saturating_sub(BASELINE);
    let connections = usable / 5 * 2 / CONNECTION_COST;
    let bytes = usable / 10 * 3 / BYTE_COST;
    let in_flight = bytes / 2;
    let fit = |share: u64, most: usize, least: usize| {
        usize::try_from(share)
            .map_or(most, |s| s.min(most))
            .max(least)
    };
    Budget {
        max_connections: fit(connections, table.max_connections, 1),
        max_partial_bytes: fit(bytes, table.max_partial_bytes, max_frame_bytes),
        max_in_flight_bytes: fit(in_flight, table.max_in_flight_bytes, max_frame_bytes),
    }
}

/// The most memory a budget lets inputs make the proxy use, in bytes: the in-flight budget
/// twice, as requests in flight and as bytes queued to agents.
pub fn worst_case(b: Budget) -> u64 {
    let connections = b.max_connections as u64 * CONNECTION_COST;
    let in_flight = (b.max_in_flight_bytes as u64).saturating_mul(2);
    let bytes = (b.max_partial_bytes as u64).saturating_add(in_flight);
    BASELINE
        .saturating_add(connections)
        .saturating_add(bytes.saturating_mul(BYTE_COST))
}

/// Options with each of the three the configuration leaves unset taken from the budget for
/// `limit` (none without a limit, so the table defaults apply).
pub(super) fn fill(mut given: Options, limit: Option<u64>) -> Options {
    let Some(limit) = limit else {
        return given;
    };
    let frame = given
        .max_frame_bytes
        .unwrap_or_else(|| Config::default().max_frame_bytes);
    let derived = derive(limit, frame);
    given.max_connections.get_or_insert(derived.max_connections);
    given
        .max_partial_bytes
        .get_or_insert(derived.max_partial_bytes);
    given
        .max_in_flight_bytes
        .get_or_insert(derived.max_in_flight_bytes);
    given
}

/// The problem with a configuration whose worst case passes `limit`, named after the options
/// set explicitly in `given` (after `--max-frame-bytes` when none is: the byte budgets cannot
/// go below one frame).
pub(super) fn check(c: &Config, given: &Options, limit: Option<u64>) -> Option<Problem> {
    let limit = limit?;
    let budget = Budget::of(c);
    let worst = worst_case(budget);
    if worst <= limit {
        return None;
    }
    let set = [
        ("max-connections", given.max_connections.is_some()),
        ("max-partial-bytes", given.max_partial_bytes.is_some()),
        ("max-in-flight-bytes", given.max_in_flight_bytes.is_some()),
    ];
    let option = set
        .iter()
        .find(|(_, set)| *set)
        .map_or("max-frame-bytes", |(option, _)| option);
    Some(Problem {
        option,
        message: format!(
            "--max-connections {} ({} KiB each), --max-partial-bytes {} and \
             --max-in-flight-bytes {} (twice: in flight and queued to agents; each byte up to \
             {BYTE_COST}) and {} MiB to run need up to {} MiB, more than the memory limit ({} MiB, cgroup): an OOM kill \
             would reset every connection. Lower them, or leave them unset to derive them \
             from the limit",
            budget.max_connections,
            CONNECTION_COST / KIB,
            budget.max_partial_bytes,
            budget.max_in_flight_bytes,
            BASELINE / MIB,
            worst.div_ceil(MIB),
            limit / MIB,
        ),
    })
}

/// Logs the memory limit and the budget in force (once logging is set up).
pub fn log(c: &Config, limit: Option<u64>) {
    let budget = Budget::of(c);
    let worst_case_mib = worst_case(budget).div_ceil(MIB);
    match limit {
        Some(limit) => {
            let derived = derive(limit, c.max_frame_bytes) == budget;
            tracing::info!(
                memory_limit_mib = limit / MIB,
                max_connections = budget.max_connections,
                max_partial_bytes = budget.max_partial_bytes,
                max_in_flight_bytes = budget.max_in_flight_bytes,
                worst_case_mib,
                derived,
                "Memory budget within the cgroup's memory limit"
            );
        }
        None => tracing::info!(
            max_connections = budget.max_connections,
            max_partial_bytes = budget.max_partial_bytes,
            max_in_flight_bytes = budget.max_in_flight_bytes,
            worst_case_mib,
            "No memory limit (cgroup): the table's memory budget"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 4 << 20;

    #[test]
    fn the_manifests_256_mib_gets_a_budget_that_fits_with_margin() {
        let b = derive(256 * MIB, FRAME);
        assert_eq!(
            b,
            Budget {
                max_connections: 5_120,
                max_partial_bytes: 20 << 20,
                max_in_flight_bytes: 10 << 20,
            }
        );
        assert!(worst_case(b) <= 256 * MIB / 8 * 7, "{}", worst_case(b));
    }

    #[test]
    fn the_table_defaults_do_not_fit_in_256_mib() {
        assert!(worst_case(Budget::table()) > 256 * MIB);
    }

    #[test]
    fn a_large_limit_keeps_the_table_defaults() {
        assert_eq!(derive(4 << 30, FRAME), Budget::table());
        assert_eq!(derive(u64::MAX, FRAME), Budget::table());
    }

    #[test]
    fn every_derived_budget_fits_its_limit_down_to_96_mib() {
        // Below about 81 MiB two whole 4 MiB frames (three counting the queue) and the
        // baseline do not fit: the proxy refuses to start, naming --max-frame-bytes.
        assert!(worst_case(derive(64 * MIB, FRAME)) > 64 * MIB);
        for mib in 96..=4096 {
            let b = derive(mib * MIB, FRAME);
            assert!(worst_case(b) <= mib * MIB, "{mib} MiB: {b:?}");
            assert!(b.max_partial_bytes >= FRAME && b.max_in_flight_bytes >= FRAME);
        }
    }

    #[test]
    fn a_tiny_limit_still_takes_one_frame_and_one_connection() {
        let b = derive(MIB, FRAME);
        assert_eq!(b.max_connections, 1);
        assert_eq!(b.max_partial_bytes, FRAME);
        assert_eq!(b.max_in_flight_bytes, FRAME);
        assert!(worst_case(b) > MIB);
    }
}
