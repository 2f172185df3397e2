//! Where a transaction's calls go: a path holds the clients to each proxy replica (one unless
//! the calls are split by weight) and what its transactions measured. A drive has one path, or
//! two in a paired comparison, or one per flow (module sources with rates of their own).

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;

use super::client::Client;
use super::recorder::Recorder;
use crate::addr::RpcAddr;

/// One module source with a rate of its own (`[[flow]]` of a scenario): its own timetable and
/// source addresses or host, so that the proxy sees it as another app.
#[derive(Debug, Clone)]
pub struct FlowArgs {
    /// Its name in the report.
    pub name: String,
    /// Transactions per second.
    pub rate: f64,
    /// Local source addresses its connections bind (none: the host's).
    pub sources: Vec<IpAddr>,
    /// A runtime on another host (the netns bed's module host) its calls run on.
    pub host: Option<tokio::runtime::Handle>,
}

/// Calls split between proxy replicas by weight: a transaction's PreRequest goes to replica r
/// (drawn by weight), its UpdateRequest or PostRequest to the next one, as two replicas behind
/// a Service see the calls of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The replicas' addresses.
    pub targets: Vec<RpcAddr>,
    /// Their weights (same length, each at least 1).
    pub weights: Vec<u32>,
}

/// One way to the agents, and what its transactions did.
pub(super) struct Path {
    /// (PreRequest client, update client) per replica.
    pub(super) replicas: Vec<(Client, Client)>,
    /// The replicas' weights.
    weights: Vec<u32>,
    pub(super) rec: Recorder,
    pub(super) transactions: AtomicU64,
    pub(super) flagged: AtomicU64,
    pub(super) blocked: AtomicU64,
    pub(super) failed_open: AtomicU64,
}

impl Path {
    /// One replica: PreRequests to `pre`, updates to `update`.
    pub(super) fn new(pre: Client, update: Client) -> Path {
        Path::split(vec![(pre, update)], vec![1])
    }

    /// Replicas with weights.
    pub(super) fn split(replicas: Vec<(Client, Client)>, weights: Vec<u32>) -> Path {
        Path {
            replicas,
            weights,
            rec: Recorder::new(),
            transactions: AtomicU64::new(0),
            flagged: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            failed_open: AtomicU64::new(0),
        }
    }

    /// The replica of the next transaction, drawn by weight.
    pub(super) fn pick(&self) -> usize {
        if self.replicas.len() == 1 {
            return 0;
        }
        let total: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = rand::random::<u64>() % total.max(1);
        for (i, &w) in self.weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        self.replicas.len() - 1
    }

    /// The clients of `replica`: where its PreRequests and its updates go.
    pub(super) fn clients(&self, replica: usize) -> (&Client, &Client) {
        let (pre, update) = &self.replicas[replica];
        (pre, update)
    }
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser): one coin flip per pair, no shared state.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
