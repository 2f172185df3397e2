//! The proxy as a whole: bind the sockets, start membership, serve, and drain (on SIGTERM,
//! SIGINT or `drain` on the control socket; the sequence is in [`crate::drain`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_pool::source::kubernetes::ServiceRef;
use agent_pool::{Address, Endpoint, EndpointId, HostPort, Pool, Updates, source};
use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
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
use crate::drain::{Drain, DrainReport, Readiness};
use crate::heap_trim;
use crate::in_flight::InFlightCount;
use crate::listener::{self, Listener};
use crate::metrics as m;
use crate::overload::{OverloadQueue, QueueConfig};
use crate::retry_budget::RetryBudget;
use crate::route::Router;
use crate::upstream::{QueuedBytes, UpstreamConfig, Upstreams};

/// How long start-up waits for the first membership before accepting anyway.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(2);

/// Returns once the pool has applied its first membership update, or after `limit`. The proxy
/// accepts only then: one restarted on the same address would otherwise answer its first calls
/// "no agent available". Meanwhile connections wait in the listen backlog.
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
                config.defer_accept,
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
        warn_if_deadline_not_under_the_modules(&config);

        // Cancelled when `run` returns: membership, admin, upstream connections.
        let exit = CancellationToken::new();
        let _exit_guard = exit.clone().drop_guard();
        spawn_housekeeping(&config, &pool, updates, prometheus.clone(), &exit);
        let readiness = Arc::new(Readiness::new());
        let drain_requested = CancellationToken::new();
        let admin_addr = admin.local_addr()?;
        let control_path = control.path().display().to_string();
        let overload = OverloadQueue::new(
            pool.clone(),
            QueueConfig {
                burst_wait: config.queue_timeout,
                answer_budget: config.rpc_timeout / 4,
                ..QueueConfig::default()
            },
        );
        let state = AdminState {
            pool: pool.clone(),
            readiness: readiness.clone(),
            prometheus,
            overload: overload.clone(),
        };
        tokio::spawn(admin::serve(admin, state, exit.clone()).instrument(info_span!("admin")));
        let control = control.serve(drain_requested.clone(), exit.clone());
        tokio::spawn(control.instrument(info_span!("control")));

        let in_flight = in_flight_count(&config, &exit);
        let stop = CancellationToken::new();
        let shared = shared_state(&config, &pool, overload, &in_flight, &stop, &exit);
        let fan_out = crate::module_init::run(shared.router.clone(), exit.clone());
        tokio::spawn(fan_out.instrument(info_span!("module_init")));
        spawn_upstream_follower(&shared, exit);

        // Accept once the first membership is in (bounded): a proxy restarted on the same
        // address would otherwise answer its first calls "no agent available". Meanwhile
        // connections wait in the listen backlog.
        wait_for_membership(&pool, MEMBERSHIP_WAIT).await;
        let tracker = TaskTracker::new();
        let draining = CancellationToken::new();
        let tokens = (draining.clone(), stop.clone());
        let (max_connections, rpc_addrs) =
            start_listeners(listeners, &config, &shared, &tracker, tokens);
        info!(
            rpc.addr = %rpc_addrs.join(","),
            admin.addr = %admin_addr,
            max_connections,
            control.path = %control_path,
            upstream.mode = ?config.upstream_mode,
            busy_poll = ?config.busy_poll,
            "Listening"
        );

        tokio::select! {
            () = shutdown.cancelled() => {}
            () = drain_requested.cancelled() => {}
        }
        draining.cancel();
        let drain = Drain::new(readiness, stop, tracker, in_flight);
        Ok(drain.run(config.drain_delay, config.drain_timeout).await)
    }
}

/// Modules give up on a call after 100 ms by default: a deadline not under it wastes work.
fn warn_if_deadline_not_under_the_modules(config: &Config) {
    if config.rpc_timeout >= Duration::from_millis(100) {
        warn!(
            rpc_timeout = ?config.rpc_timeout,
            "RPC deadline not under the modules' default 100 ms timeout: modules may give up first"
        );
    }
}

/// The proxy-wide RPC count, with the busy poller that reads it when `--busy-poll` is on.
fn in_flight_count(config: &Config, exit: &CancellationToken) -> Arc<InFlightCount> {
    let in_flight = Arc::new(if config.busy_poll.is_zero() {
        InFlightCount::default()
    } else {
        InFlightCount::with_activity()
    });
    let poller = busy_poll::run(in_flight.clone(), config.busy_poll, exit.clone());
    tokio::spawn(poller.instrument(info_span!("busy_poll")));
    in_flight
}

/// The background tasks that live as long as the proxy: the recorder's upkeep, the heap
/// trimmer and the membership stream applied to the pool.
fn spawn_housekeeping(
    config: &Config,
    pool: &Pool,
    updates: Updates,
    prometheus: PrometheusHandle,
    exit: &CancellationToken,
) {
    // Histogram samples wait in the recorder until upkeep folds them into buckets: without
    // it memory grows with every RPC unless something scrapes.
    tokio::spawn(m::upkeep(prometheus, exit.clone()).instrument(info_span!("metrics_upkeep")));
    let trim = heap_trim::trim_periodically(config.memory_trim_interval, exit.clone());
    tokio::spawn(trim.instrument(info_span!("heap_trim")));
    let pool = pool.clone();
    let exit = exit.clone();
    tokio::spawn(
        async move {
            tokio::select! {
                () = pool.run(updates) => {}
                () = exit.cancelled() => {}
            }
        }
        .instrument(info_span!("membership")),
    );
}

/// Keeps the upstream connections in step with the pool until `exit` (see
/// [`Upstreams::follow`]).
fn spawn_upstream_follower(shared: &Arc<Shared>, exit: CancellationToken) {
    let shared = shared.clone();
    tokio::spawn(
        async move {
            let router = &shared.router;
            router.upstreams.follow(&router.pool, exit).await;
        }
        .instrument(info_span!("upstream_follower")),
    );
}

/// What every connection task shares, built from the configuration.
pub(crate) fn shared_state(
    config: &Config,
    pool: &Pool,
    overload: Arc<OverloadQueue>,
    in_flight: &Arc<InFlightCount>,
    stop: &CancellationToken,
    exit: &CancellationToken,
) -> Arc<Shared> {
    let limits = Limits {
        max_frame_bytes: config.max_frame_bytes,
        ..Limits::default()
    };
    Arc::new(Shared {
        router: Arc::new(Router {
            pool: pool.clone(),
            upstreams: Upstreams::new(
                UpstreamConfig {
                    mode: config.upstream_mode,
                    connections: config.upstream_connections,
                    connect_timeout: config.connect_timeout,
                    limits,
                    queued: QueuedBytes::new(config.max_in_flight_bytes),
                },
                exit.clone(),
            ),
            retry_budget: RetryBudget::new(config.retry_budget),
            rpc_timeout: config.rpc_timeout,
            in_flight: in_flight.clone(),
            max_in_flight: config.max_in_flight,
            max_in_flight_bytes: config.max_in_flight_bytes,
            modules: Default::default(),
            overload,
        }),
        limits,
        max_in_flight_per_connection: config.max_in_flight_per_connection,
        idle_timeout: config.idle_timeout,
        frame_read_timeout: config.frame_read_timeout,
        write_timeout: config.write_timeout,
        reset_closed_idle: config.reset_closed_idle,
        stop: stop.clone(),
    })
}

/// Starts an accept loop per listener (tracked, so the drain waits for the last backlog sweep
/// and the listeners' close); returns the connection limit and the addresses. `(draining,
/// stop)`: cancelled when a drain starts, and when the listeners are to close.
fn start_listeners(
    listeners: Vec<Listener>,
    config: &Config,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    (draining, stop): (CancellationToken, CancellationToken),
) -> (usize, Vec<String>) {
    let admission = Admission::new(
        admission::clamp_to_fd_limit(config.max_connections),
        config.max_partial_bytes,
    );
    let rpc_addrs = listeners
        .iter()
        .map(|l| l.local_addr().to_string())
        .collect();
    for l in listeners {
        let span = info_span!("accept", listen.addr = %l.local_addr());
        let accept = listener::accept_loop(
            l,
            shared.clone(),
            admission.clone(),
            tracker.clone(),
            draining.clone(),
            stop.clone(),
        );
        tracker.spawn(accept.instrument(span));
    }
    (admission.limit(), rpc_addrs)
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
