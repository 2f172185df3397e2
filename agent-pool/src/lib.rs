//! The pool of `sigsci-agent` endpoints as the proxy sees it: membership, load, picker,
//! passive health and the autoscaling hint. No wire protocol in here.
//!
//! - A membership source ([`source`]) yields [`Update`]s; [`Pool::run`] applies them and
//!   publishes each membership as an immutable [`Snapshot`] (ArcSwap), read without locks.
//! - [`Snapshot::pick`] chooses an [`Agent`] for new work by power of two choices on peak-EWMA
//!   latency × (outstanding + 1); [`Snapshot::by_token`] finds the agent an [`AffinityToken`]
//!   names, for UpdateRequests, even while it terminates or shortly after it left.
//! - [`Agent::start`] counts a request in flight; [`InFlight::finish`] records its latency and
//!   [`Outcome`], which drives passive health (ejection with exponential backoff) and the
//!   agent's learned concurrency limit ([`Agent::has_free_slot`], [`Snapshot::pick_free`]).
//! - A periodic tick (inside [`Pool::run`], or [`Pool::tick`]) computes [`Hints`].
#![warn(missing_docs)]

mod agent;
mod backoff;
mod endpoint;
mod ewma;
mod health;
mod hints;
mod limit;
mod picker;
mod pool;
mod snapshot;
pub mod source;
mod token;

#[cfg(test)]
mod tests;

pub use agent::{Agent, AgentState, AgentStats, InFlight, Outcome};
pub use backoff::Backoff;
pub use endpoint::{
    Address, AddressError, Endpoint, EndpointId, HostPort, HostPortError, SourceState, Update,
};
pub use health::EjectionConfig;
pub use hints::{Hints, HintsConfig};
pub use limit::LimitConfig;
pub use pool::{ConfigError, Pool, PoolConfig};
pub use snapshot::Snapshot;
pub use token::{AffinityToken, ShortToken, TokenError};

/// Every membership source yields this stream (docs/style.md #8).
pub type Updates = futures::stream::BoxStream<'static, Update>;

/// A sleep deadline that never comes: a `select!` branch disabled by its guard still needs a
/// future to hold.
pub(crate) fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

#[doc(hidden)]
pub mod __bench {
    //! For the criterion bench only: a uniform random pick, the baseline P2C is measured against.
    use std::sync::Arc;

    use crate::{Agent, Snapshot};

    /// A uniformly random agent of the snapshot's ready list (no load, no health check).
    pub fn uniform_pick(s: &Snapshot) -> Option<Arc<Agent>> {
        let ready = s.ready_agents();
        (!ready.is_empty()).then(|| ready[crate::picker::random_index(ready.len())].clone())
    }
}
