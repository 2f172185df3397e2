//! The Kubernetes membership source against a fake API server speaking the real list + watch
//! protocol (the `fake-apiserver` crate), with kube-runtime's real watcher, feeding a real
//! `Pool`. Each test follows one story a cluster operator would see and checks that the pool's
//! membership follows each change. Event → membership latencies are printed
//! (`cargo test -p agent-pool --test it kubernetes:: -- --nocapture`) as `latency ...` lines; the
//! assertions only bound them generously (`FOLLOW`), they are not performance tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_pool::source::kubernetes::{REQUIRED_VERBS, SERVICE_NAME_LABEL, kubernetes};
use agent_pool::{Agent, AgentState, Pool, PoolConfig, Update};
use fake_apiserver::FakeApiServer;
use futures::StreamExt;
use http::StatusCode;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;

const NS: &str = "sigsci";
const SERVICE: &str = "sigsci-agent";
/// Upper bound for a change to reach the pool when the API server is up (the target is well
/// under 1 s; this bound only keeps a loaded CI box from flaking).
const FOLLOW: Duration = Duration::from_secs(5);
/// Upper bound when the change needs a reconnect or a re-list, which wait for the source's retry
/// delay (50–100 ms, doubling up to 1–2 s).
const RESYNC: Duration = Duration::from_secs(30);

// ---- slices ----

#[derive(Clone, Copy)]
enum Cond {
    Ready,
    Terminating,
    NotReady,
}

fn pod(n: u8, cond: Cond) -> SliceEndpoint {
    let (ready, serving, terminating) = match cond {
        Cond::Ready => (true, true, false),
        Cond::Terminating => (false, true, true),
        Cond::NotReady => (false, false, false),
    };
    SliceEndpoint {
        addresses: vec![format!("10.1.0.{n}")],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(NS.into()),
            name: Some(format!("agent-{n}")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(name: &str, endpoints: Vec<SliceEndpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_owned(),
                SERVICE.to_owned(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![
            EndpointPort {
                name: Some("metrics".into()),
                port: Some(9090),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            EndpointPort {
                name: Some("rpc".into()),
                port: Some(9999),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        endpoints,
    }
}

fn ready(ns: impl IntoIterator<Item = u8>) -> Vec<SliceEndpoint> {
    ns.into_iter().map(|n| pod(n, Cond::Ready)).collect()
}

// ---- the pool under observation ----

/// Members as the pool sees them: pod id → state, gone agents left out.
type View = BTreeMap<String, AgentState>;

fn view(pool: &Pool) -> View {
    pool.snapshot()
        .agents()
        .iter()
        .filter(|a| a.state() != AgentState::Gone)
        .map(|a| (a.id().to_string(), a.state()))
        .collect()
}

fn expect(members: &[(u8, AgentState)]) -> View {
    members
        .iter()
        .map(|(n, s)| (format!("{NS}/agent-{n}"), *s))
        .collect()
}

fn all_ready(ns: impl IntoIterator<Item = u8>) -> View {
    ns.into_iter()
        .map(|n| (format!("{NS}/agent-{n}"), AgentState::Ready))
        .collect()
}

/// The source feeding a real pool, every update logged and each new view published.
struct Observed {
    pool: Pool,
    views: watch::Receiver<View>,
    log: Arc<Mutex<Vec<Update>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observed {
    async fn start(fake: &FakeApiServer) -> Observed {
        // The states the source's updates set, without the pool's join delay on top (this
        // drives `apply` directly, not `Pool::run`, which ends the delays).
        let pool = Pool::new(PoolConfig {
            join_delay: Duration::ZERO,
            ..PoolConfig::default()
        });
        let mut updates = kubernetes(fake.client(), NS, SERVICE, Some("rpc")).await;
        let (tx, views) = watch::channel(View::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (pool, log) = (pool.clone(), log.clone());
            async move {
                while let Some(update) = updates.next().await {
                    log.lock().unwrap().push(update.clone());
                    pool.apply(update);
                    tx.send_replace(view(&pool));
                }
            }
        });
        Observed {
            pool,
            views,
            log,
            task,
        }
    }

    /// Waits until the pool shows `want`; returns how long it took from `since`.
    async fn follows(
        &mut self,
        scenario: &str,
        event: &str,
        since: Instant,
        within: Duration,
        want: &View,
    ) -> Duration {
        let reached = matches!(
            tokio::time::timeout(within, self.views.wait_for(|v| v == want)).await,
            Ok(Ok(_))
        );
        let took = since.elapsed();
        assert!(
            reached,
            "{scenario}/{event}: pool shows {:?} after {took:?}, want {want:?}; updates: {:?}",
            *self.views.borrow(),
            self.log.lock().unwrap()
        );
        println!(
            "latency scenario={scenario} event={event} ms={:.1}",
            took.as_secs_f64() * 1e3
        );
        took
    }

    fn agent(&self, n: u8) -> Arc<Agent> {
        let id = format!("{NS}/agent-{n}");
        self.pool
            .snapshot()
            .agents()
            .iter()
            .find(|a| a.id().as_str() == id)
            .cloned()
            .expect("agent in pool")
    }

    fn updates(&self) -> Vec<Update> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- scenarios ----

#[tokio::test]
async fn follows_scaling_from_3_to_5_to_2() {
    let fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready(1..=3)));
    let mut seen = Observed::start(&fake).await;
    seen.follows(
        "scale",
        "initial-3",
        Instant::now(),
        FOLLOW,
        &all_ready(1..=3),
    )
    .await;
    let first = seen.agent(1);
    assert!(
        matches!(seen.updates().first(), Some(Update::Reset(eps)) if eps.len() == 3),
        "starts with one Reset"
    );

    let t = Instant::now();
    fake.apply(slice("agents-a", ready(1..=5)));
    seen.follows("scale", "3to5", t, FOLLOW, &all_ready(1..=5))
        .await;

    let t = Instant::now();
    fake.apply(slice("agents-a", ready([1, 4])));
    seen.follows("scale", "5to2", t, FOLLOW, &all_ready([1, 4]))
        .await;
    assert!(
        Arc::ptr_eq(&first, &seen.agent(1)),
        "a pod that stays keeps its Agent (and its load counters)"
    );
    let gone = seen
        .pool
        .snapshot()
        .agents()
        .iter()
        .filter(|a| a.state() == AgentState::Gone)
        .count();
    assert_eq!(
        gone, 3,
        "removed pods stay known as gone for their grace period"
    );

    // Only list and watch, on endpointslices of this namespace, selected by the service label.
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        println!("request {} {:?}", r.verb, r.query);
        assert!(
            REQUIRED_VERBS.contains(&r.verb),
            "verb {} not in REQUIRED_VERBS: {r:?}",
            r.verb
        );
        assert_eq!(r.namespace, NS);
        assert_eq!(
            r.query.get("labelSelector").map(String::as_str),
            Some("kubernetes.io/service-name=sigsci-agent")
        );
    }
}

#[tokio::test]
async fn a_terminating_pod_takes_no_new_work_then_leaves() {
    let fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready(1..=3)));
    let mut seen = Observed::start(&fake).await;
    seen.follows(
        "terminate",
        "initial-3",
        Instant::now(),
        FOLLOW,
        &all_ready(1..=3),
    )
    .await;

    let t = Instant::now();
    fake.apply(slice(
        "agents-a",
        vec![
            pod(1, Cond::Ready),
            pod(2, Cond::Ready),
            pod(3, Cond::Terminating),
        ],
    ));
    let want = expect(&[
        (1, AgentState::Ready),
        (2, AgentState::Ready),
        (3, AgentState::Terminating),
    ]);
    seen.follows("terminate", "terminating", t, FOLLOW, &want)
        .await;
    for _ in 0..50 {
        let picked = seen.pool.snapshot().pick().expect("ready agents");
        assert_ne!(
            picked.id().as_str(),
            "sigsci/agent-3",
            "no new work for a terminating pod"
        );
    }

    let t = Instant::now();
    fake.apply(slice("agents-a", ready(1..=2)));
    seen.follows("terminate", "removed", t, FOLLOW, &all_ready(1..=2))
        .await;
    assert_eq!(
        seen.agent(3).state(),
        AgentState::Gone,
        "still found (for its UpdateRequests) while in grace"
    );
    assert!(
        matches!(seen.updates().last(), Some(Update::Remove(id)) if id.as_str() == "sigsci/agent-3")
    );

    // A pod that is neither ready nor serving is not a member.
    let t = Instant::now();
    fake.apply(slice(
        "agents-a",
        vec![pod(1, Cond::Ready), pod(2, Cond::NotReady)],
    ));
    seen.follows("terminate", "not-ready", t, FOLLOW, &all_ready([1]))
        .await;
}

#[tokio::test]
async fn slices_are_merged_and_a_pod_moving_between_slices_does_not_flap() {
    let fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready([1, 2])));
    fake.apply(slice("agents-b", ready([3])));
    let mut seen = Observed::start(&fake).await;
    seen.follows(
        "merge",
        "initial-2-slices",
        Instant::now(),
        FOLLOW,
        &all_ready(1..=3),
    )
    .await;

    // The slice that loses pod 2 is written before the one that gains it.
    let t = Instant::now();
    fake.apply(slice("agents-a", ready([1])));
    fake.apply(slice("agents-b", ready([2, 3, 4])));
    seen.follows("merge", "move-and-add", t, FOLLOW, &all_ready(1..=4))
        .await;
    // And the other order.
    fake.apply(slice("agents-a", ready([1, 3])));
    fake.apply(slice("agents-b", ready([2, 4])));
    tokio::time::sleep(Duration::from_millis(600)).await; // past the removal hold
    let flaps: Vec<_> = seen
        .updates()
        .into_iter()
        .filter(|u| matches!(u, Update::Remove(_)))
        .collect();
    assert!(
        flaps.is_empty(),
        "a pod moving between slices must not be removed: {flaps:?}"
    );
    assert_eq!(*seen.views.borrow(), all_ready(1..=4));

    let t = Instant::now();
    fake.delete(NS, "agents-b");
    seen.follows("merge", "slice-deleted", t, FOLLOW, &all_ready([1, 3]))
        .await;
}

#[tokio::test]
async fn membership_is_kept_while_the_api_server_is_down_and_resynced_after() {
    let mut fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready(1..=3)));
    let mut seen = Observed::start(&fake).await;
    seen.follows(
        "restart",
        "initial-3",
        Instant::now(),
        FOLLOW,
        &all_ready(1..=3),
    )
    .await;
    let kept = seen.agent(2);
    let before = seen.updates().len();

    fake.watching().await;
    fake.stop();
    // Scaled while the API server is away; etcd compacts the history meanwhile, so the watch
    // cannot resume and the source must re-list.
    fake.apply(slice("agents-a", ready([2, 3, 4, 5])));
    fake.compact();
    tokio::time::sleep(Duration::from_millis(1500)).await; // a failed reconnect or two
    assert_eq!(
        seen.updates().len(),
        before,
        "no update while the API server is down"
    );
    assert_eq!(
        *seen.views.borrow(),
        all_ready(1..=3),
        "membership kept while down"
    );

    let t = Instant::now();
    fake.restart().await;
    seen.follows(
        "restart",
        "resync-after-restart",
        t,
        RESYNC,
        &all_ready(2..=5),
    )
    .await;
    assert!(
        Arc::ptr_eq(&kept, &seen.agent(2)),
        "agents survive the resync with their counters"
    );
    assert!(
        fake.count("list") >= 2,
        "re-listed after 410: {:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn a_dropped_watch_resumes_from_its_resource_version() {
    let fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready(1..=3)));
    let mut seen = Observed::start(&fake).await;
    seen.follows(
        "drop",
        "initial-3",
        Instant::now(),
        FOLLOW,
        &all_ready(1..=3),
    )
    .await;

    fake.watching().await;
    fake.bookmark();
    let t = Instant::now();
    fake.drop_watches();
    fake.apply(slice("agents-a", ready(1..=4)));
    seen.follows("drop", "change-across-drop", t, FOLLOW, &all_ready(1..=4))
        .await;

    let t = Instant::now();
    fake.apply(slice("agents-a", ready([1, 2, 4])));
    seen.follows(
        "drop",
        "change-after-rewatch",
        t,
        FOLLOW,
        &all_ready([1, 2, 4]),
    )
    .await;
    assert_eq!(
        fake.count("list"),
        1,
        "resumed by watching from the last resourceVersion, no re-list"
    );
    assert!(fake.count("watch") >= 2);

    // A slice rewritten with the same endpoints (new resourceVersion) changes nothing.
    let n = seen.updates().len();
    fake.apply(slice("agents-a", ready([1, 2, 4])));
    fake.bookmark();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(seen.updates().len(), n, "no update when nothing changed");
}

#[tokio::test]
async fn gone_410_makes_the_source_relist() {
    let fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready(1..=3)));
    let mut seen = Observed::start(&fake).await;
    seen.follows(
        "gone410",
        "initial-3",
        Instant::now(),
        FOLLOW,
        &all_ready(1..=3),
    )
    .await;
    let kept = seen.agent(1);

    // A change the watch never delivers, then 410 Gone on the watch: only a list can see it.
    fake.watching().await;
    let t = Instant::now();
    fake.apply_unseen(slice(
        "agents-a",
        vec![
            pod(1, Cond::Ready),
            pod(2, Cond::Terminating),
            pod(6, Cond::Ready),
        ],
    ));
    fake.expire_watches();
    let want = expect(&[
        (1, AgentState::Ready),
        (2, AgentState::Terminating),
        (6, AgentState::Ready),
    ]);
    seen.follows("gone410", "relist-after-410", t, RESYNC, &want)
        .await;
    assert_eq!(fake.count("list"), 2, "{:?}", fake.requests());
    assert!(
        Arc::ptr_eq(&kept, &seen.agent(1)),
        "agents survive a re-list with their counters"
    );

    // And the new watch works.
    let t = Instant::now();
    fake.apply(slice("agents-a", ready([1, 6])));
    seen.follows(
        "gone410",
        "change-after-relist",
        t,
        FOLLOW,
        &all_ready([1, 6]),
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_api_server_at_start_yields_nothing_until_it_answers() {
    let mut fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready(1..=2)));
    fake.stop();
    let mut seen = Observed::start(&fake).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        seen.updates().is_empty(),
        "no empty Reset while the API server cannot be reached"
    );

    let t = Instant::now();
    fake.restart().await;
    seen.follows(
        "coldstart",
        "first-list-after-outage",
        t,
        RESYNC,
        &all_ready(1..=2),
    )
    .await;
    assert!(matches!(seen.updates().first(), Some(Update::Reset(eps)) if eps.len() == 2));
}

#[tokio::test]
async fn a_failing_api_server_is_retried_soon_but_not_hammered() {
    let fake = FakeApiServer::start().await;
    fake.apply(slice("agents-a", ready(1..=2)));
    // Up, but failing every request (etcd down): each answer is an error, nothing is progress.
    fake.fail_with(Some(StatusCode::INTERNAL_SERVER_ERROR));
    let mut seen = Observed::start(&fake).await;
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let tried = fake.requests().len();
    println!("requests scenario=failing window_ms=4000 count={tried}");
    // Retries after at least 50, 100, 200, 400, then 500 ms each: at most 11 requests in 4 s
    // (a retry loop without a growing delay would make hundreds); a slow box makes fewer.
    assert!(tried <= 11, "hammered: {tried} requests in {window:?}");
    assert!(tried >= 2, "not retried: {:?}", fake.requests());
    assert!(seen.updates().is_empty(), "nothing emitted while failing");

    let t = Instant::now();
    fake.fail_with(None);
    seen.follows(
        "failing",
        "first-list-after-500s",
        t,
        RESYNC,
        &all_ready(1..=2),
    )
    .await;
}
