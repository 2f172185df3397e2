//! The simulator's counters: lock-free while serving, read as a [`AgentStats`] snapshot for
//! `/stats` (JSON), `/metrics` (Prometheus text) and the summary printed on exit.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters (atomics).
        #[derive(Debug, Default)]
        pub(crate) struct Counters { $( pub(crate) $name: AtomicU64, )* }

        /// A snapshot of the simulator's counters. Every field is a total since start, except
        /// `pending` and `connections_active` (current values).
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct AgentStats { $( $(#[$doc])* pub $name: u64, )* }

        impl Counters {
            pub(crate) fn snapshot(&self) -> AgentStats {
                AgentStats { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl AgentStats {
            /// `(name, value)` of every counter, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

counters! {
    /// `RPC.ModuleInit` requests received.
    moduleinits,
    /// `RPC.PreRequest` requests received.
    prerequests,
    /// `RPC.PreRequest` requests received before the first `RPC.ModuleInit`: work taken by an
    /// agent that did not know the module yet.
    prerequests_before_module_init,
    /// `RPC.UpdateRequest` requests received.
    updaterequests,
    /// `RPC.PostRequest` requests received.
    postrequests,
    /// Requests for any other method (answered with an error response).
    unknown_methods,
    /// Notifications received (ignored).
    notifications,
    /// Requests whose params could not be decoded (answered with an error response).
    bad_params,
    /// PreRequests answered 406.
    blocked,
    /// PreRequests answered with a RequestID (blocked ones included).
    flagged,
    /// UpdateRequests whose RequestID was pending here.
    updates_matched,
    /// UpdateRequests whose RequestID this agent never issued.
    updates_orphaned,
    /// UpdateRequests for an ID this agent issued but whose context had already expired.
    updates_expired,
    /// Issued RequestIDs whose context expired with no UpdateRequest.
    contexts_expired,
    /// RequestIDs currently waiting for their UpdateRequest.
    pending,
    /// Connections closed because of bytes that are not MessagePack-RPC.
    malformed,
    /// Connections accepted.
    connections,
    /// Connections currently open.
    connections_active,
    /// Responses written.
    responses,
    /// Responses sent within 80 ms of their request's arrival: in time for the proxy's default
    /// agent deadline, so their answer was most likely used (an overloaded agent's late answers
    /// are not).
    responses_timely,
    /// Connections reset or hung up, or requests answered with an error or never answered, on
    /// purpose (faults).
    faults_injected,
    /// Requests answered with an error frame by the `error` fault.
    errors_answered,
    /// Requests never answered (the `stall` fault).
    stalled,
    /// Requests received before the startup delay passed (the real agent inspects them with
    /// what it has before its rules are loaded).
    before_startup,
    /// Worker time spent serving, microseconds (service times as scaled by `slow`, counted as
    /// each request is served): ÷ (workers × elapsed) is the busy fraction, what CPU
    /// utilization is to a real, CPU-bound agent.
    busy_us,
}

impl AgentStats {
    /// Prometheus text exposition.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for (name, v) in self.fields() {
            let (metric, kind) = match name {
                "pending" | "connections_active" => (format!("sigsci_sim_agent_{name}"), "gauge"),
                _ => (format!("sigsci_sim_agent_{name}_total"), "counter"),
            };
            let _ = writeln!(out, "# TYPE {metric} {kind}\n{metric} {v}");
        }
        out
    }

    /// One line per counter, for the summary printed on exit.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (name, v) in self.fields() {
            let _ = writeln!(out, "  {name:<20} {v}");
        }
        out
    }

    /// Counter-wise difference `self - earlier` (gauges keep `self`'s value).
    pub fn since(&self, earlier: &AgentStats) -> AgentStats {
        let mut d = self.clone();
        let before: std::collections::HashMap<_, _> = earlier.fields().into_iter().collect();
        let mut json = serde_json::to_value(&d).expect("serialisable");
        for (name, v) in self.fields() {
            if name != "pending" && name != "connections_active" {
                json[name] = v.saturating_sub(before[name]).into();
            }
        }
        d = serde_json::from_value(json).expect("same shape");
        d
    }
}
