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
mod config;
mod cpu;
mod inspect;
mod server;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::addr::{Listener, RpcAddr};

pub use config::{AgentConfig, Faults, default_attack_patterns};
pub use cpu::Shape;
pub use server::{INJECTED_ERROR, PADDING_HEADER, SERVICE_TIME_HEADER};
pub use stats::AgentStats;

impl AgentConfig {
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
