//! The agent simulator: a stand-in for the proprietary `sigsci-agent` that speaks the module RPC
//! protocol, decides like a WAF (attack patterns → 406), issues RequestIDs and remembers them for
//! the context expiration, and counts every UpdateRequest as matched, orphaned or expired.
//!
//! It runs as the `loadtest agent` process or in-process through [`SimAgent::builder`]:
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let agent = simulator::agent::SimAgent::builder()
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .flag_fraction(0.1)
//!     .spawn()
//!     .await?;
//! println!("agent at {}", agent.rpc_addr());
//! let stats = agent.shutdown().await;
//! # Ok(()) }
//! ```

mod admin;
mod cpu;
mod inspect;
mod server;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::addr::{Listener, RpcAddr};
use crate::units::ServiceTime;

pub use cpu::Shape;
pub use server::{INJECTED_ERROR, PADDING_HEADER, SERVICE_TIME_HEADER};
pub use stats::AgentStats;

/// Faults that can be switched on at start (flags) or at run time (`POST /fault?...`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Close the listening socket: new connections are refused (ECONNREFUSED).
    pub refuse: bool,
    /// Accept connections and close them at once without reading.
    pub hangup: bool,
    /// Reset (TCP RST) every connection on its next request instead of answering.
    pub reset: bool,
    /// Answer every request at once with an error frame ([`INJECTED_ERROR`]), no service time.
    pub error: bool,
    /// Accept connections and read requests, never answer them.
    pub stall: bool,
    /// Extra delay added to every answer.
    #[serde(with = "micros")]
    pub delay: Duration,
    /// Service time multiplier (1.0 = normal; 4.0 = four times slower).
    pub slow: f64,
    /// Crash (close everything at once; the process exits with status 3) after this many more
    /// requests.
    pub exit_after: Option<u64>,
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// Simulator configuration; also the builder returned by [`SimAgent::builder`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// RPC listen address (default `127.0.0.1:0`).
    pub listen: RpcAddr,
    /// Admin HTTP listen address (default none).
    pub admin: Option<SocketAddr>,
    /// `(pattern, tag)`: a PreRequest whose URI, a header value or body contains `pattern`
    /// (ASCII case-insensitive) is blocked with 406 and tagged `tag`.
    pub attack_patterns: Vec<(String, String)>,
    /// Fraction of allowed PreRequests that still get a RequestID (default 0).
    pub flag_fraction: f64,
    /// How long an issued RequestID waits for its UpdateRequest (default 10 s).
    pub context_expiration: Duration,
    /// Work per RPC (default fixed 200 µs).
    pub service_time: ServiceTime,
    /// Worker slots (FIFO: RPCs served at once, more wait for a slot) or processors (processor
    /// sharing: every RPC in progress shares them) (default 4).
    pub workers: usize,
    /// How calls use the workers (default [`Shape::Fifo`]).
    pub shape: Shape,
    /// Initial faults.
    pub faults: Faults,
    /// Time from start until the startup probe answers 200 (default 0): the real agent's
    /// startup probe answers 503 until its rules are loaded, while its RPC listener already
    /// serves.
    pub startup_delay: Duration,
    /// Address of the startup probe HTTP listener (`GET /startup`), like the agent's
    /// `SIGSCI_STARTUP_PROBE_LISTENER` (default none; `/startup` is also on the admin server).
    pub startup_probe: Option<SocketAddr>,
    /// Bytes of padding in every PreRequest answer, as the value of one extra request header
    /// ([`PADDING_HEADER`]; default 0, none): answers larger than the socket buffers, for tests
    /// of clients that read slowly or not at all.
    pub answer_padding: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: RpcAddr::Tcp("127.0.0.1:0".into()),
            admin: None,
            attack_patterns: default_attack_patterns(),
            flag_fraction: 0.0,
            context_expiration: Duration::from_secs(10),
            service_time: ServiceTime::Fixed(Duration::from_micros(200)),
            workers: 4,
            shape: Shape::Fifo,
            faults: Faults {
                slow: 1.0,
                ..Faults::default()
            },
            startup_delay: Duration::ZERO,
            startup_probe: None,
            answer_padding: 0,
        }
    }
}

/// The patterns a default simulator blocks: `<script` (XSS) and `' OR 1=1` (SQLI).
pub fn default_attack_patterns() -> Vec<(String, String)> {
    vec![
        ("<script".into(), "XSS".into()),
        ("' OR 1=1".into(), "SQLI".into()),
    ]
}

impl AgentConfig {
    /// Sets the RPC listen address.
    pub fn listen(mut self, addr: RpcAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Sets the admin HTTP address.
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }
    /// Sets the fraction of allowed PreRequests that get a RequestID.
    pub fn flag_fraction(mut self, f: f64) -> Self {
        self.flag_fraction = f;
        self
    }
    /// Sets how long a RequestID is remembered.
    pub fn context_expiration(mut self, d: Duration) -> Self {
        self.context_expiration = d;
        self
    }
    /// Sets the service time model.
    pub fn service_time(mut self, s: ServiceTime) -> Self {
        self.service_time = s;
        self
    }
    /// Sets the number of worker slots.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Sets the CPU shape.
    pub fn shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }
    /// Sets the initial faults.
    pub fn faults(mut self, f: Faults) -> Self {
        self.faults = f;
        self
    }
    /// Sets the startup delay (the startup probe answers 503 until it has passed).
    pub fn startup_delay(mut self, d: Duration) -> Self {
        self.startup_delay = d;
        self
    }
    /// Sets the startup probe listen address.
    pub fn startup_probe(mut self, addr: SocketAddr) -> Self {
        self.startup_probe = Some(addr);
        self
    }
    /// Sets the padding bytes added to every PreRequest answer.
    pub fn answer_padding(mut self, bytes: usize) -> Self {
        self.answer_padding = bytes;
        self
    }

    /// Every problem with this configuration, named by its flag.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if !(0.0..=1.0).contains(&self.flag_fraction) {
            errs.push(format!(
                "--flag-fraction {} is not within 0..=1",
                self.flag_fraction
            ));
        }
        if self.workers == 0 {
            errs.push("--workers must be at least 1".into());
        }
        if self.context_expiration.is_zero() {
            errs.push("--context-expiration must be positive".into());
        }
        if !(self.faults.slow.is_finite() && self.faults.slow > 0.0) {
            errs.push(format!(
                "--slow {} must be a positive factor",
                self.faults.slow
            ));
        }
        if self.faults.error && self.faults.stall {
            errs.push("--error and --stall exclude each other".into());
        }
        if self.attack_patterns.iter().any(|(p, _)| p.is_empty()) {
            errs.push("--attack-pattern must not be empty".into());
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Binds the listeners and starts serving.
    pub async fn spawn(self) -> anyhow::Result<SimAgent> {
        if let Err(errs) = self.validate() {
            anyhow::bail!("invalid agent configuration: {}", errs.join("; "));
        }
        let listener = Listener::bind(&self.listen).await?;
        let rpc_addr = listener.local_addr()?;
        let admin_listener = match self.admin {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let probe_listener = match self.startup_probe {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
            None => None,
        };
        let startup_probe_addr = probe_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let (faults_tx, _) = watch::channel(self.faults.clone());
        let shared = Arc::new(server::Shared::new(self, faults_tx));
        let tracker = TaskTracker::new();
        tracker.spawn(server::accept_loop(
            listener,
            rpc_addr.clone(),
            shared.clone(),
        ));
        if let Some(l) = admin_listener {
            let shared = shared.clone();
            let token = shared.stop.clone();
            tokio::spawn(crate::http::serve(l, token, move |req| {
                admin::handle(shared.clone(), req)
            }));
        }
        if let Some(l) = probe_listener {
            let shared = shared.clone();
            let token = shared.stop.clone();
            tokio::spawn(crate::http::serve(l, token, move |req| {
                admin::startup_probe(shared.clone(), req)
            }));
        }
        Ok(SimAgent {
            rpc_addr,
            admin_addr,
            startup_probe_addr,
            shared,
            tracker,
        })
    }
}

/// A running simulator. Dropping it does not stop it: call [`SimAgent::shutdown`] (graceful) or
/// [`SimAgent::kill`] (a crash).
#[derive(Debug)]
pub struct SimAgent {
    rpc_addr: RpcAddr,
    admin_addr: Option<SocketAddr>,
    startup_probe_addr: Option<SocketAddr>,
    shared: Arc<server::Shared>,
    tracker: TaskTracker,
}

/// Why a simulator stopped on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `POST /shutdown` was called.
    ShutdownRequested,
    /// The `exit_after` fault fired.
    Crashed,
}

impl SimAgent {
    /// A builder with the defaults of [`AgentConfig`].
    pub fn builder() -> AgentConfig {
        AgentConfig::default()
    }

    /// The bound RPC address (port 0 resolved).
    pub fn rpc_addr(&self) -> &RpcAddr {
        &self.rpc_addr
    }

    /// The bound TCP address (port 0 resolved); `None` when listening on a Unix socket.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.rpc_addr {
            RpcAddr::Tcp(a) => a.parse().ok(),
            RpcAddr::Unix(_) => None,
        }
    }

    /// The bound admin address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The bound startup probe address, if any.
    pub fn startup_probe_addr(&self) -> Option<SocketAddr> {
        self.startup_probe_addr
    }

    /// Whether the startup delay has passed (the startup probe answers 200).
    pub fn started(&self) -> bool {
        self.shared.started()
    }

    /// Current counters.
    pub fn stats(&self) -> AgentStats {
        self.shared.stats()
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Resolves when the simulator stopped on its own (admin shutdown or crash fault).
    pub async fn stopped(&self) -> Stopped {
        tokio::select! {
            _ = self.shared.crash.cancelled() => Stopped::Crashed,
            _ = self.shared.shutdown_requested.cancelled() => Stopped::ShutdownRequested,
        }
    }

    /// Stops accepting, lets in-flight RPCs finish (at most `grace`, default 5 s), and returns
    /// the final counters.
    pub async fn shutdown(self) -> AgentStats {
        self.shutdown_within(Duration::from_secs(5)).await
    }

    /// Stops at once, as a crashed process does: the listener closes and every connection is
    /// dropped unanswered. Returns when every task has ended (at most `5 s`), so the address
    /// can be bound again.
    pub async fn kill(self) -> AgentStats {
        self.shared.crash.cancel();
        self.shutdown_within(Duration::from_secs(5)).await
    }

    /// [`SimAgent::shutdown`] with an explicit grace period.
    pub async fn shutdown_within(self, grace: Duration) -> AgentStats {
        self.shared.stop.cancel();
        self.shared.tracker.close();
        self.tracker.close();
        let all = async {
            self.tracker.wait().await;
            self.shared.tracker.wait().await;
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("In-flight RPCs cut after the grace period");
            self.shared.crash.cancel();
        }
        self.shared.stats()
    }
}
