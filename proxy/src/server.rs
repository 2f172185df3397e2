//! The proxy as a whole: bind the sockets, start membership, serve, and drain.
//!
//! Drain sequence (SIGTERM, SIGINT or `drain` on the control socket): `/readyz` turns 503 at once; the listeners
//! keep accepting for the drain delay while Service endpoints converge; then they close,
//! connections finish their in-flight RPCs and close; `run` returns as soon as nothing is left,
//! or at the drain timeout with the number of RPCs cut off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_pool::source::kubernetes::ServiceRef;
use agent_pool::{Address, Endpoint, EndpointId, HostPort, Pool, Updates, source};
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::admin::{self, AdminState};
use crate::admission::{self, Admission};
use crate::busy_poll;
use crate::codec::Limits;
use crate::config::{Config, ListenAddr, Membership};
use crate::control::ControlSocket;
use crate::downstream::Shared;
use crate::drain::{DrainReport, Readiness};
use crate::in_flight::InFlightCount;
use crate::listener::{self, Listener};
use crate::memory;
use crate::metrics as m;
use crate::route::{RetryBudget, Router};
use crate::upstream::{UpstreamConfig, Upstreams};

/// How long start-up waits for the first membership before accepting anyway.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(2);

/// Returns once the pool has applied its first membership update, or after `limit`.
async fn wait_for_membership(pool: &Pool, limit: Duration) {
    let started = Instant::now();
    while pool.snapshot().version() == 0 {
        if started.elapsed() >= limit {
            warn!(
                waited = ?limit,
                "No agent membership yet: accepting anyway, RPCs get an error frame until agents appear"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A proxy with its sockets bound, ready to [`run`](Proxy::run).
pub struct Proxy {
    config: Config,
    listeners: Vec<Listener>,
    admin: TcpListener,
    control: ControlSocket,
    pool: Pool,
}

impl Proxy {
    /// Binds the RPC listeners and the admin port. Nothing is served until [`Proxy::run`].
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = Listener::bind_with_mode(
                addr,
                config.backlog,
                config.reuse_port,
                config.unix_socket_mode,
            )
            .with_context(|| format!("cannot listen on {addr}"))?;
            listeners.push(l);
        }
        let admin = TcpListener::bind(config.admin)
            .await
            .with_context(|| format!("cannot listen on admin address {}", config.admin))?;
        // After the admin port, whose bound number names the default path.
        let control_path = config.control_socket.clone().unwrap_or_else(|| {
            Config::default_control_socket(admin.local_addr().map_or(0, |a| a.port()))
        });
        let control = ControlSocket::bind(&control_path).with_context(|| {
            format!("cannot listen on control socket {}", control_path.display())
        })?;
        let pool = Pool::new(config.pool_config());
        Ok(Self {
            config,
            listeners,
            admin,
            control,
            pool,
        })
    }

    /// The control socket's path (`sigsci-proxy drain` talks to it).
    pub fn control_path(&self) -> &std::path::Path {
        self.control.path()
    }

    /// The bound RPC addresses (real ports when `:0` was asked).
    pub fn rpc_addrs(&self) -> Vec<ListenAddr> {
        self.listeners.iter().map(Listener::local_addr).collect()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin)
    }

    /// The agent pool (tests look at it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Serves until `shutdown` is cancelled (or `drain` on the control socket), then drains
    /// and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<DrainReport> {
        let Self {
            config,
            listeners,
            admin,
            control,
            pool,
        } = self;
        let prometheus = m::handle();
        m::draining(false);
        let updates = membership(&config).await?;
        if config.rpc_timeout >= Duration::from_millis(100) {
            warn!(
                rpc_timeout = ?config.rpc_timeout,
                "RPC deadline not under the modules' default 100 ms timeout: modules may give up first"
            );
        }

        // Cancelled when `run` returns: membership, admin, upstream connections.
        let exit = CancellationToken::new();
        let _exit_guard = exit.clone().drop_guard();
        // Histogram samples wait in the recorder until upkeep folds them into buckets: without
        // it memory grows with every RPC unless something scrapes.
        tokio::spawn(m::upkeep(prometheus.clone(), exit.clone()));
        tokio::spawn(memory::trim_periodically(
            config.memory_trim_interval,
            exit.clone(),
        ));
        {
            let pool = pool.clone();
            let exit = exit.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = pool.run(updates) => {}
                    () = exit.cancelled() => {}
                }
            });
        }

        let readiness = Arc::new(Readiness::new());
        let drain_requested = CancellationToken::new();
        let admin_addr = admin.local_addr()?;
        let control_path = control.path().display().to_string();
        tokio::spawn(
            control
                .serve(drain_requested.clone(), exit.clone())
                .instrument(info_span!("control")),
        );
        tokio::spawn(
            admin::serve(
                admin,
                AdminState {
                    pool: pool.clone(),
                    readiness: readiness.clone(),
                    prometheus,
                },
                exit.clone(),
            )
            .instrument(info_span!("admin")),
        );

        let in_flight = Arc::new(if config.busy_poll.is_zero() {
            InFlightCount::default()
        } else {
            InFlightCount::with_activity()
        });
        tokio::spawn(busy_poll::run(
            in_flight.clone(),
            config.busy_poll,
            exit.clone(),
        ));
        let limits = Limits {
            max_frame_bytes: config.max_frame_bytes,
            ..Limits::default()
        };
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            router: Router {
                pool: pool.clone(),
                upstreams: Upstreams::new(
                    UpstreamConfig {
                        mode: config.upstream_mode,
                        connections: config.upstream_connections,
                        connect_timeout: config.connect_timeout,
                        limits,
                    },
                    exit.clone(),
                ),
                budget: RetryBudget::new(config.retry_budget),
                rpc_timeout: config.rpc_timeout,
                in_flight: in_flight.clone(),
                max_in_flight: config.max_in_flight,
                max_in_flight_bytes: config.max_in_flight_bytes,
                modules: Default::default(), // issue 19: ModuleInit to every agent
            },
            limits,
            max_in_flight: config.max_in_flight_per_connection,
            idle_timeout: config.idle_timeout,
            frame_read_timeout: config.frame_read_timeout,
            write_timeout: config.write_timeout,
            reset_closed_idle: config.reset_closed_idle,
            stop: stop.clone(),
        });

        // Upstream connections follow the membership: checked every 100 ms, synced when the
        // snapshot changed and every second (to reopen connections agents closed). Agents in a
        // run of failures are probed at each check: one found unreachable that accepts a
        // connection again is readmitted on trial with a fresh latency estimate, within 100 ms
        // of listening instead of after its backoff and penalty.
        {
            let shared = shared.clone();
            let exit = exit.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                let (mut seen, mut synced) = (u64::MAX, Instant::now());
                loop {
                    tokio::select! {
                        () = exit.cancelled() => break,
                        _ = every.tick() => {}
                    }
                    let snapshot = shared.router.pool.snapshot();
                    if snapshot.version() != seen || synced.elapsed() >= Duration::from_secs(1) {
                        seen = snapshot.version();
                        synced = Instant::now();
                        shared.router.upstreams.sync(&snapshot);
                    }
                    let upstreams = &shared.router.upstreams;
                    let fresh = snapshot.typical_latency();
                    let probes =
                        snapshot
                            .agents()
                            .iter()
                            .filter(|a| a.is_suspect())
                            .map(|a| async move {
                                a.probed(upstreams.probe(a).await, fresh);
                            });
                    futures::future::join_all(probes).await;
                }
            });
        }

        // issue 19: copies of ModuleInit to every agent, replays to agents that join.
        tokio::spawn(crate::module_init::run(shared.clone(), exit.clone()));

        // Accept once the first membership is in (bounded): a proxy restarted on the same
        // address would otherwise answer its first calls "no agent available". Meanwhile
        // connections wait in the listen backlog.
        wait_for_membership(&pool, MEMBERSHIP_WAIT).await;

        let tracker = TaskTracker::new();
        let admission = Admission::new(
            admission::clamp_to_fd_limit(config.max_connections),
            config.max_partial_bytes,
        );
        let rpc_addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().to_string())
            .collect();
        // Tracked too, so the drain waits for the last backlog sweep and the listeners' close.
        for l in listeners {
            tracker.spawn(listener::accept_loop(
                l,
                shared.clone(),
                admission.clone(),
                tracker.clone(),
                stop.clone(),
            ));
        }
        info!(
            rpc.addr = %rpc_addrs.join(","),
            admin.addr = %admin_addr,
            max_connections = admission.limit(),
            control.path = %control_path,
            upstream.mode = ?config.upstream_mode,
            busy_poll = ?config.busy_poll,
            "Listening"
        );

        tokio::select! {
            () = shutdown.cancelled() => {}
            () = drain_requested.cancelled() => {}
        }
        let drain_started = Instant::now();
        readiness.drain();
        m::draining(true);
        info!(delay = ?config.drain_delay, timeout = ?config.drain_timeout, "Draining");
        tokio::time::sleep(config.drain_delay).await;

        stop.cancel();
        tracker.close();
        info!(rpcs.in_flight = in_flight.get(), "Listeners closed");
        let left = config.drain_timeout.saturating_sub(drain_started.elapsed());
        let report = match tokio::time::timeout(left, tracker.wait()).await {
            Ok(()) => {
                info!(elapsed = ?drain_started.elapsed(), "Drained");
                DrainReport { cut_off: 0 }
            }
            Err(_) => {
                let cut_off = in_flight.get();
                m::uninspected_n(m::Uninspected::DrainCutOff, cut_off);
                warn!(
                    rpcs.cut_off = cut_off,
                    "Drain timeout, exiting with RPCs in flight"
                );
                DrainReport { cut_off }
            }
        };
        Ok(report)
    }
}

/// Binds and runs: what `main` calls.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<DrainReport> {
    Proxy::bind(config).await?.run(shutdown).await
}

/// The membership stream the configuration asks for.
async fn membership(config: &Config) -> anyhow::Result<Updates> {
    match config.membership().context("no membership source")? {
        Membership::Static(list) => {
            let mut endpoints = Vec::new();
            for text in &list {
                endpoints.push(resolve(text).await?);
            }
            Ok(source::fixed(endpoints))
        }
        Membership::File(path) => {
            // Fail fast on a file that cannot be read or parsed at start-up.
            source::read_file(&path)
                .with_context(|| format!("--agents-file {}", path.display()))?;
            Ok(source::file(path, config.agents_file_poll))
        }
        Membership::Dns(HostPort { host, port }) => {
            Ok(source::dns(host, port, config.agents_dns_interval))
        }
        Membership::Kubernetes(ServiceRef {
            namespace,
            service,
            port_name,
        }) => {
            let client = source::kubernetes::client_from_env()
                .await
                .context("--agents-k8s: no Kubernetes client")?;
            Ok(source::kubernetes(client, &namespace, &service, port_name.as_deref()).await)
        }
    }
}

/// A static agent: an address literal, or a name resolved once (its id stays the name).
async fn resolve(text: &str) -> anyhow::Result<Endpoint> {
    if let Ok(address) = text.parse::<Address>() {
        return Ok(Endpoint::new(address));
    }
    let HostPort { host, port } = text.parse().context("--agents")?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("--agents: cannot resolve {text}"))?
        .next()
        .with_context(|| format!("--agents: {text} resolves to no address"))?;
    Ok(Endpoint::new(Address::Tcp(addr)).with_id(EndpointId::new(text)))
}
