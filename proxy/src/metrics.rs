//! Prometheus metrics. Every name is `sigsci_proxy_*` with its unit in the name; labels come
//! from closed sets (method, outcome, result, state) or from the membership (agent address),
//! never from client input. Per-agent series are rendered from the pool's snapshot at scrape
//! time, so departed agents disappear from `/metrics` with them.
//!
//! Series are written three ways, each for a reason:
//! - **cached handles** ([`Hot`], `overload.rs`'s): the series every RPC touches are registered
//!   once, because a `counter!` call hashes its key and looks it up in the registry, which on a
//!   connection-per-call path would be paid several times per RPC;
//! - **`counter!`/`gauge!` at the call site**: events that happen per failure, retry, connect or
//!   drain, far from every RPC, where one lookup costs nothing measurable and the call names the
//!   series it records (a handle for each would be a field per label value, for nothing);
//! - **hand-written lines** (`render.rs`): the series read from this proxy's pool when
//!   `/metrics` is scraped, never recorded as events: the per-agent series, because a recorder
//!   keeps every label set it has seen while a departed agent's series must disappear with it,
//!   and the autoscaling hints and ready agents, because they belong to this proxy's pool and
//!   not to the process-wide recorder (several proxies in one process, as the tests run them,
//!   each show their own).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::codec::Method;

mod module_init;
mod overload;
mod render;
pub(crate) use module_init::{module_init_copied, module_unremembered, modules_known};
pub(crate) use overload::{Shed, queue_shed, queue_wait, queued};
pub(crate) use render::render;

/// Latency buckets in seconds: the interesting range is well under the modules' 100 ms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.1,
    0.25, 1.0,
];

/// Installs the process-wide recorder once and returns its handle.
pub(crate) fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program): then our
            // counters go there and /metrics shows only what this handle sees.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Registered after the recorder is installed: earlier handles would be no-ops.
            let _ = HOT.set(Hot::register());
            handle
        })
        .clone()
}

/// How often [`upkeep`] runs: histogram samples recorded in between wait in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Folds recorded histogram samples into their buckets every [`UPKEEP_EVERY`] until `exit`,
/// so the recorder's memory stays flat whether or not anything scrapes `/metrics` (the
/// exporter's own upkeep task comes only with its HTTP listener, which we do not use).
pub(crate) async fn upkeep(handle: PrometheusHandle, exit: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = exit.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// `# HELP` of every family the recorder holds (docs/metrics.md says what to alert on), and a
/// 0 for the closed label sets rules and dashboards use, so each family is on `/metrics` from
/// the start and not only after its first event.
fn describe() {
    describe_counter!(
        "sigsci_proxy_rpcs_total",
        "RPCs finished, by method and outcome (ok, agent_error, lost, or the failure: in_flight_limit, invalid_frame, no_agent, connect_failure, not_sent, backlogged, unsendable, upstream_broken, upstream_protocol, timeout, shed)."
    );
    describe_histogram!(
        "sigsci_proxy_rpc_duration_seconds",
        "Time from an RPC's arrival to its answer (or failure), by method, in seconds."
    );
    describe_counter!(
        "sigsci_proxy_uninspected_total",
        "Module calls (or connections) the proxy left uninspected, by reason: the module got an error frame, a reset or no answer and let its request through unseen."
    );
    describe_counter!(
        "sigsci_proxy_connections_accepted_total",
        "Module connections accepted (modules open one per RPC)."
    );
    describe_counter!(
        "sigsci_proxy_connections_rejected_total",
        "Module connections reset at once at --max-connections."
    );
    describe_counter!(
        "sigsci_proxy_connections_closed_total",
        "Module connections closed by the proxy, by reason (malformed, slow_frame, write_timeout, frame_budget, evicted_idle, idle, io)."
    );
    describe_counter!(
        "sigsci_proxy_module_closes_total",
        "Module connections the module closed first, by how the proxy closed its side: reset (nothing in flight: no TIME_WAIT left on the module's host) or fin."
    );
    describe_counter!(
        "sigsci_proxy_accept_errors_total",
        "accept(2) failures for lack of resources (file descriptors, memory); the listener backs off."
    );
    describe_gauge!(
        "sigsci_proxy_connections_open",
        "Module connections open now."
    );
    describe_gauge!(
        "sigsci_proxy_rpcs_in_flight",
        "RPCs received and not yet answered."
    );
    describe_counter!(
        "sigsci_proxy_affinity_total",
        "UpdateRequests by routing result: hit (to the agent that issued the RequestID), none (no token), lost (the token names no current member: the agent never hears how the request ended)."
    );
    describe_counter!(
        "sigsci_proxy_retries_total",
        "Retries of a failed call on another agent: attempted, budget_exhausted, no_other_agent."
    );
    describe_counter!(
        "sigsci_proxy_upstream_connects_total",
        "New connections to agents, by result (ok, error, timeout)."
    );
    describe_gauge!(
        "sigsci_proxy_upstream_connections_open",
        "Persistent connections to agents open now."
    );
    describe_gauge!(
        "sigsci_proxy_draining",
        "1 while this proxy drains (readiness off), else 0."
    );
    module_init::describe();
    overload::describe();
    start_at_zero();
}

/// Registers every labelled series at zero, so that a rate over a series that has not moved
/// yet reads 0 instead of nothing.
fn start_at_zero() {
    for result in ["hit", "none", "lost"] {
        counter!("sigsci_proxy_affinity_total", "result" => result).increment(0);
    }
    for result in ["attempted", "budget_exhausted", "no_other_agent"] {
        counter!("sigsci_proxy_retries_total", "result" => result).increment(0);
    }
    for result in UpstreamConnect::ALL {
        counter!("sigsci_proxy_upstream_connects_total", "result" => result.label()).increment(0);
    }
    counter!("sigsci_proxy_connections_rejected_total").increment(0);
    counter!("sigsci_proxy_accept_errors_total").increment(0);
    for reason in ConnectionClose::ALL {
        counter!("sigsci_proxy_connections_closed_total", "reason" => reason.label()).increment(0);
    }
    for close in ["reset", "fin"] {
        counter!("sigsci_proxy_module_closes_total", "close" => close).increment(0);
    }
    for outcome in RpcOutcome::ALL {
        for method in METHOD_LABELS {
            counter!("sigsci_proxy_rpcs_total", "method" => method, "outcome" => outcome.label())
                .increment(0);
        }
    }
    gauge!("sigsci_proxy_upstream_connections_open").increment(0.0);
}

/// Handles of the series on the per-RPC path, indexed by [`method_index`].
struct Hot {
    rpcs_ok: [Counter; METHODS],
    duration: [Histogram; METHODS],
    accepted: Counter,
    connections_open: Gauge,
    in_flight: Gauge,
    affinity_hit: Counter,
    affinity_none: Counter,
    uninspected: [Counter; Uninspected::ALL.len()],
}

const METHODS: usize = 5;
const METHOD_LABELS: [&str; METHODS] = [
    "pre_request",
    "update_request",
    "post_request",
    "module_init",
    "other",
];

static HOT: OnceLock<Hot> = OnceLock::new();

impl Hot {
    fn register() -> Self {
        Self {
            rpcs_ok: METHOD_LABELS.map(
                |method| counter!("sigsci_proxy_rpcs_total", "method" => method, "outcome" => "ok"),
            ),
            duration: METHOD_LABELS
                .map(|method| histogram!("sigsci_proxy_rpc_duration_seconds", "method" => method)),
            accepted: counter!("sigsci_proxy_connections_accepted_total"),
            connections_open: gauge!("sigsci_proxy_connections_open"),
            in_flight: gauge!("sigsci_proxy_rpcs_in_flight"),
            affinity_hit: counter!("sigsci_proxy_affinity_total", "result" => "hit"),
            affinity_none: counter!("sigsci_proxy_affinity_total", "result" => "none"),
            uninspected: Uninspected::ALL.map(|r| {
                let c = counter!("sigsci_proxy_uninspected_total", "reason" => r.label());
                c.increment(0);
                c
            }),
        }
    }
}

fn method_index(method: Method) -> usize {
    match method {
        Method::PreRequest => 0,
        Method::UpdateRequest => 1,
        Method::PostRequest => 2,
        Method::ModuleInit => 3,
        Method::Other => 4,
    }
}

/// How an RPC ended: the `outcome` of `sigsci_proxy_rpcs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RpcOutcome {
    /// An agent answered.
    Ok,
    /// An agent answered with an error (passed on to the module).
    AgentError,
    /// An UpdateRequest whose token names no member, answered by the proxy.
    Lost,
    /// Shed at the proxy-wide in-flight limit.
    InFlightLimit,
    /// A structurally invalid call, answered by the proxy.
    InvalidFrame,
    /// No agent could take it.
    NoAgent,
    /// Connecting to the agent failed or timed out.
    ConnectFailure,
    /// The agent connection failed before the call was written.
    NotSent,
    /// The agent connection's write queue was full.
    Backlogged,
    /// The call could not be sent (too large for the agent connection).
    Unsendable,
    /// The agent connection broke with the call sent and unanswered.
    UpstreamBroken,
    /// The agent answered something that is not a valid answer.
    UpstreamProtocol,
    /// No answer before the RPC deadline.
    Timeout,
    /// Shed by the overload queue: every agent at its limit.
    Shed,
}

impl RpcOutcome {
    /// Every outcome, registered at 0 for every method at start-up.
    const ALL: [RpcOutcome; 14] = [
        Self::Ok,
        Self::AgentError,
        Self::Lost,
        Self::InFlightLimit,
        Self::InvalidFrame,
        Self::NoAgent,
        Self::ConnectFailure,
        Self::NotSent,
        Self::Backlogged,
        Self::Unsendable,
        Self::UpstreamBroken,
        Self::UpstreamProtocol,
        Self::Timeout,
        Self::Shed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::AgentError => "agent_error",
            Self::Lost => "lost",
            Self::InFlightLimit => "in_flight_limit",
            Self::InvalidFrame => "invalid_frame",
            Self::NoAgent => "no_agent",
            Self::ConnectFailure => "connect_failure",
            Self::NotSent => "not_sent",
            Self::Backlogged => "backlogged",
            Self::Unsendable => "unsendable",
            Self::UpstreamBroken => "upstream_broken",
            Self::UpstreamProtocol => "upstream_protocol",
            Self::Timeout => "timeout",
            Self::Shed => "shed",
        }
    }
}

/// One RPC finished with `outcome` after `elapsed`.
pub(crate) fn rpc_finished(method: Method, outcome: RpcOutcome, elapsed: Duration) {
    let Some(hot) = HOT.get() else { return };
    let i = method_index(method);
    if outcome == RpcOutcome::Ok {
        hot.rpcs_ok[i].increment(1);
    } else {
        counter!("sigsci_proxy_rpcs_total", "method" => METHOD_LABELS[i], "outcome" => outcome.label())
            .increment(1);
    }
    hot.duration[i].record(elapsed.as_secs_f64());
}

/// Why a module's call went uninspected: the module got an error frame, a reset, or no answer,
/// and let its HTTP request through unseen (modules fail open). A closed set: every series is
/// registered at 0 when the recorder is installed, so rules and dashboards find each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Uninspected {
    /// No agent could take the call: an error frame at once.
    NoAgent,
    /// No answer before the RPC deadline.
    Deadline,
    /// The agent answered with an error (after the retry, if one was allowed).
    AgentError,
    /// The agent connection failed (refused, broke, invalid answer) after the retry.
    AgentFailed,
    /// A structurally invalid request, answered locally and never forwarded.
    InvalidFrame,
    /// A frame over `--max-frame-bytes`: the connection is reset.
    FrameTooLarge,
    /// A frame that did not complete within `--frame-read-timeout`.
    SlowFrame,
    /// A connection reset at `--max-connections`.
    ConnectionLimit,
    /// A call shed at the proxy-wide in-flight limit (calls or bytes).
    InFlightLimit,
    /// A connection shed because partly received frames exceeded the proxy-wide byte budget.
    FrameBudget,
    /// The answer could not be written to the module within the write timeout.
    WriteTimeout,
    /// Still in flight when the drain timeout ended the process.
    DrainCutOff,
    /// Shed by the overload queue: every agent at its limit (an error frame at once).
    Shed,
}

impl Uninspected {
    /// Every reason, in the order `/metrics` lists them.
    pub(crate) const ALL: [Uninspected; 13] = [
        Self::NoAgent,
        Self::Deadline,
        Self::AgentError,
        Self::AgentFailed,
        Self::InvalidFrame,
        Self::FrameTooLarge,
        Self::SlowFrame,
        Self::ConnectionLimit,
        Self::InFlightLimit,
        Self::FrameBudget,
        Self::WriteTimeout,
        Self::DrainCutOff,
        Self::Shed,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::NoAgent => "no_agent",
            Self::Deadline => "deadline",
            Self::AgentError => "agent_error",
            Self::AgentFailed => "agent_failed",
            Self::InvalidFrame => "invalid_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::SlowFrame => "slow_frame",
            Self::ConnectionLimit => "connection_limit",
            Self::InFlightLimit => "in_flight_limit",
            Self::FrameBudget => "frame_budget",
            Self::WriteTimeout => "write_timeout",
            Self::DrainCutOff => "drain_cut_off",
            Self::Shed => "shed",
        }
    }
}

/// One call (or connection) left uninspected, by reason: `sigsci_proxy_uninspected_total`.
pub(crate) fn uninspected(reason: Uninspected) {
    uninspected_n(reason, 1);
}

/// `n` calls left uninspected for the same reason.
pub(crate) fn uninspected_n(reason: Uninspected, n: u64) {
    if let Some(hot) = HOT.get() {
        hot.uninspected[reason as usize].increment(n);
    }
}

/// RPCs in flight, up or down.
pub(crate) fn in_flight(delta: f64) {
    if let Some(hot) = HOT.get() {
        hot.in_flight.increment(delta);
    }
}

/// How an UpdateRequest's RequestID token routed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Affinity {
    /// The token named a member: sent to the agent that issued the ID.
    Hit,
    /// No token: balanced.
    None,
    /// A token naming no member: answered by the proxy, sent to no agent.
    Lost,
}

/// An UpdateRequest routed by its token (`hit`), with a token naming no member (`lost`), or
/// without a token (`none`).
pub(crate) fn affinity(result: Affinity) {
    match (HOT.get(), result) {
        (Some(hot), Affinity::Hit) => hot.affinity_hit.increment(1),
        (Some(hot), Affinity::None) => hot.affinity_none.increment(1),
        (_, result) => {
            let label = match result {
                Affinity::Hit => "hit",
                Affinity::None => "none",
                Affinity::Lost => "lost",
            };
            counter!("sigsci_proxy_affinity_total", "result" => label).increment(1);
        }
    }
}

/// What became of a retry on another agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Sent to another agent.
    Attempted,
    /// The retry budget had no token.
    BudgetExhausted,
    /// No other agent could take it.
    NoOtherAgent,
}

/// A retry on another agent, by what became of it.
pub(crate) fn retry(result: Retry) {
    let label = match result {
        Retry::Attempted => "attempted",
        Retry::BudgetExhausted => "budget_exhausted",
        Retry::NoOtherAgent => "no_other_agent",
    };
    counter!("sigsci_proxy_retries_total", "result" => label).increment(1);
}

/// How a new connection to an agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamConnect {
    /// Connected.
    Ok,
    /// Refused or failed.
    Error,
    /// Not connected within the connect timeout.
    Timeout,
}

impl UpstreamConnect {
    const ALL: [UpstreamConnect; 3] = [Self::Ok, Self::Error, Self::Timeout];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// A new upstream connection, by result.
pub(crate) fn upstream_connect(result: UpstreamConnect) {
    counter!("sigsci_proxy_upstream_connects_total", "result" => result.label()).increment(1);
}

/// Persistent upstream connections open, up or down.
pub(crate) fn upstream_open(delta: f64) {
    gauge!("sigsci_proxy_upstream_connections_open").increment(delta);
}

/// A downstream connection accepted.
pub(crate) fn connection_accepted() {
    if let Some(hot) = HOT.get() {
        hot.accepted.increment(1);
    }
}

/// A downstream connection closed at once because of the connection limit.
pub(crate) fn connection_rejected() {
    counter!("sigsci_proxy_connections_rejected_total").increment(1);
}

/// accept(2) failed for lack of resources.
pub(crate) fn accept_error() {
    counter!("sigsci_proxy_accept_errors_total").increment(1);
}

/// Downstream connections open, up or down.
pub(crate) fn connections_open(delta: f64) {
    if let Some(hot) = HOT.get() {
        hot.connections_open.increment(delta);
    }
}

/// Why the proxy closed a module's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionClose {
    /// Not a valid frame, or no call to answer.
    Malformed,
    /// A frame not complete within `--frame-read-timeout`.
    SlowFrame,
    /// An answer not written within `--write-timeout`.
    WriteTimeout,
    /// Shed: partly received frames over the proxy-wide byte budget.
    FrameBudget,
    /// Shed: the longest idle at the connection limit.
    EvictedIdle,
    /// Nothing in flight and no bytes for `--idle-timeout`.
    Idle,
    /// Reading or writing the socket failed.
    Io,
}

impl ConnectionClose {
    /// Every reason, registered at 0 at start-up.
    const ALL: [ConnectionClose; 7] = [
        Self::Malformed,
        Self::SlowFrame,
        Self::WriteTimeout,
        Self::FrameBudget,
        Self::EvictedIdle,
        Self::Idle,
        Self::Io,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::SlowFrame => "slow_frame",
            Self::WriteTimeout => "write_timeout",
            Self::FrameBudget => "frame_budget",
            Self::EvictedIdle => "evicted_idle",
            Self::Idle => "idle",
            Self::Io => "io",
        }
    }
}

/// A downstream connection closed by the proxy, by reason.
pub(crate) fn connection_closed(reason: ConnectionClose) {
    counter!("sigsci_proxy_connections_closed_total", "reason" => reason.label()).increment(1);
}

/// How the proxy closed a connection the module closed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModuleClose {
    /// Nothing was in flight or unwritten: a reset, so neither host keeps the connection in
    /// TIME_WAIT.
    Reset,
    /// Calls were still in flight after the module's half-close (or the reset is turned off):
    /// answered, then a FIN.
    Fin,
}

/// A connection the module closed first, closed by the proxy as `how`.
pub(crate) fn module_closed(how: ModuleClose) {
    let close = match how {
        ModuleClose::Reset => "reset",
        ModuleClose::Fin => "fin",
    };
    counter!("sigsci_proxy_module_closes_total", "close" => close).increment(1);
}

/// 1 while draining.
pub(crate) fn draining(on: bool) {
    gauge!("sigsci_proxy_draining").set(if on { 1.0 } else { 0.0 });
}
