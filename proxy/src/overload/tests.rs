//! The overload queue on paused tokio time: agents of one fixed slot each, so who gets a freed
//! slot, who waits and who is shed is decided by the queue alone.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_pool::{Endpoint, LimitConfig, Pool, PoolConfig, Update};
use tokio::time::Instant;

use super::*;

/// A pool of `n` agents whose limit is fixed at one call each.
fn pool(n: usize) -> Pool {
    let pool = Pool::new(PoolConfig {
        limit: LimitConfig {
            initial: 1,
            min: 1,
            max: 1,
            ..LimitConfig::default()
        },
        ..PoolConfig::default()
    });
    pool.apply(Update::Reset(
        (0..n)
            .map(|i| Endpoint::new(format!("10.0.0.{}:736", i + 1).parse().unwrap()))
            .collect(),
    ));
    pool
}

fn queue(pool: &Pool, burst_wait_ms: u64) -> Arc<OverloadQueue> {
    OverloadQueue::new(
        pool.clone(),
        QueueConfig {
            burst_wait: Duration::from_millis(burst_wait_ms),
            ..QueueConfig::default()
        },
    )
}

fn flow(last: u8) -> Flow {
    Flow::ip(IpAddr::from([192, 0, 2, last]))
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_millis(80)
}

/// The slot of a balanced call of flow 1 that found one free (the pool's only slot, here).
async fn hold(q: &Arc<OverloadQueue>, pool: &Pool) -> Slot {
    q.balanced(&pool.snapshot(), &flow(1), deadline())
        .await
        .expect("a free slot")
}

/// Starts a balanced call that waits in the background; its result comes back on the handle.
fn waiting(
    q: &Arc<OverloadQueue>,
    pool: &Pool,
    f: Flow,
) -> tokio::task::JoinHandle<Result<Slot, Refused>> {
    let (q, pool) = (q.clone(), pool.clone());
    tokio::spawn(async move { q.balanced(&pool.snapshot(), &f, deadline()).await })
}

/// Calls of `f` queued one by one until one is shed (the room is a few calls; more as the
/// agent's latency estimate decays in real time while the test runs). The last handle is the
/// one shed.
async fn flood_until_shed(
    q: &Arc<OverloadQueue>,
    pool: &Pool,
    f: Flow,
) -> Vec<tokio::task::JoinHandle<Result<Slot, Refused>>> {
    let mut flood = Vec::new();
    loop {
        flood.push(waiting(q, pool, f.clone()));
        settle().await;
        if flood.iter().any(|h| h.is_finished()) {
            return flood;
        }
        assert!(flood.len() < 40, "the flood never ran out of room");
    }
}

/// Lets spawned waiters run up to their first wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_goes_to_the_waiting_call() {
    let pool = pool(1);
    let q = queue(&pool, 20);
    let first = hold(&q, &pool).await;
    let second = waiting(&q, &pool, flow(1));
    settle().await;
    assert!(
        !second.is_finished(),
        "the only slot is taken: the call waits"
    );
    first.finish(agent_pool::Outcome::Success);
    let slot = second.await.unwrap().expect("the freed slot");
    assert_eq!(slot.agent().address().to_string(), "10.0.0.1:736");
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_no_longer_than_the_queue_timeout() {
    let pool = pool(1);
    let q = queue(&pool, 20);
    let _held = hold(&q, &pool).await;
    let started = Instant::now();
    let r = q.balanced(&pool.snapshot(), &flow(1), deadline()).await;
    assert_eq!(r.unwrap_err(), Refused::Shed(Shed::Expired));
    assert_eq!(started.elapsed(), Duration::from_millis(20));
    assert_eq!(
        q.queued.load(Ordering::SeqCst),
        0,
        "the expired call left the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_room_the_arrival_is_shed_at_once() {
    let pool = pool(1);
    // The room: what drains in half the wait, 200 calls/s (1 slot, 5 ms) × 10 ms = 2, a few
    // more as the agent's latency estimate decays in real time while the test runs.
    let q = queue(&pool, 20);
    let _held = hold(&q, &pool).await;
    let waiters: Vec<_> = (0..8).map(|_| waiting(&q, &pool, flow(1))).collect();
    settle().await;
    let started = Instant::now();
    let r = q.balanced(&pool.snapshot(), &flow(1), deadline()).await;
    assert_eq!(r.unwrap_err(), Refused::Shed(Shed::Full));
    assert_eq!(started.elapsed(), Duration::ZERO, "shed without waiting");
    drop(waiters);
}

#[tokio::test(start_paused = true)]
async fn a_light_flow_is_served_before_the_rest_of_a_flood() {
    let pool = pool(1);
    let q = queue(&pool, 40);
    let mut held = hold(&q, &pool).await;
    // Four: what the room holds (200 calls/s × half of 40 ms), two in each of the flood's queues.
    let mut flood: Vec<_> = (0..4).map(|_| waiting(&q, &pool, flow(1))).collect();
    settle().await;
    // Two freed slots serve the flood's two queues once each: both stay busy.
    for _ in 0..2 {
        held.finish(agent_pool::Outcome::Success);
        settle().await;
        let at = flood
            .iter()
            .position(|h| h.is_finished())
            .expect("one served");
        held = flood.remove(at).await.unwrap().unwrap();
    }
    let light = waiting(&q, &pool, flow(2));
    settle().await;
    assert_eq!(q.queued.load(Ordering::SeqCst), 3);
    // The next freed slot goes to the light flow, ahead of the flood calls waiting longer.
    held.finish(agent_pool::Outcome::Success);
    settle().await;
    assert!(light.is_finished(), "the light flow's call is served next");
    assert!(flood.iter().all(|h| !h.is_finished()));
    let slot = light.await.unwrap().unwrap();
    drop(slot);
}

#[tokio::test(start_paused = true)]
async fn a_flood_loses_its_newest_call_to_a_lighter_flow() {
    let pool = pool(1);
    // Room 5 (200 calls/s × half of 50 ms), a few more as the latency estimate decays in real time:
    // the flood queues until it finds none.
    let q = queue(&pool, 50);
    let _held = hold(&q, &pool).await;
    let mut flood = flood_until_shed(&q, &pool, flow(1)).await;
    let full = flood.pop().unwrap().await.unwrap();
    assert_eq!(
        full.unwrap_err(),
        Refused::Shed(Shed::Full),
        "the flood itself finds no room"
    );
    // A flow spreads over two queues: its first two calls find an empty one, its third needs
    // room.
    let light: Vec<_> = (0..3).map(|_| waiting(&q, &pool, flow(2))).collect();
    settle().await;
    let evicted = flood
        .into_iter()
        .filter(|h| h.is_finished())
        .collect::<Vec<_>>();
    assert_eq!(
        evicted.len(),
        1,
        "one flood call made room for the light flow's third"
    );
    for h in evicted {
        assert_eq!(h.await.unwrap().unwrap_err(), Refused::Shed(Shed::Evicted));
    }
    assert!(
        light.iter().all(|h| !h.is_finished()),
        "the light flow's calls wait"
    );
}

#[tokio::test(start_paused = true)]
async fn an_update_for_an_agent_goes_before_the_balanced_calls() {
    let pool = pool(1);
    let q = queue(&pool, 20);
    let held = hold(&q, &pool).await;
    let agent = held.agent().clone();
    let balanced = waiting(&q, &pool, flow(1));
    settle().await;
    let pinned = {
        let (q, agent) = (q.clone(), agent.clone());
        tokio::spawn(async move { q.pinned(&agent, deadline()).await })
    };
    settle().await;
    held.finish(agent_pool::Outcome::Success);
    settle().await;
    assert!(pinned.is_finished() && !balanced.is_finished());
    let slot = pinned.await.unwrap().unwrap();
    assert!(Arc::ptr_eq(slot.agent(), &agent));
}

#[tokio::test(start_paused = true)]
async fn with_no_agent_taking_work_the_call_is_refused_not_queued() {
    let pool = pool(0);
    let q = queue(&pool, 20);
    let r = q.balanced(&pool.snapshot(), &flow(1), deadline()).await;
    assert_eq!(r.unwrap_err(), Refused::NoAgent);
    assert_eq!(q.queued.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn in_a_standing_queue_a_heavy_flow_waits_short_and_a_light_one_long() {
    let pool = pool(1);
    let q = queue(&pool, 20);
    let _held = hold(&q, &pool).await;
    // Flow 1 floods until a call of its is shed: the queue stands.
    let flood = flood_until_shed(&q, &pool, flow(1)).await;
    for h in &flood {
        h.abort();
    }
    settle().await;
    assert_eq!(
        q.queued.load(Ordering::SeqCst),
        0,
        "aborted calls left the queue"
    );
    let started = Instant::now();
    let heavy = q.balanced(&pool.snapshot(), &flow(1), deadline()).await;
    assert_eq!(heavy.unwrap_err(), Refused::Shed(Shed::Expired));
    // The standing floor, 2 ms, against the burst's 20 ms.
    assert_eq!(started.elapsed(), Duration::from_millis(2));
    // A light flow waits as in a burst, then borrows a slot over the limit rather than fail
    // open: it sends few calls.
    let started = Instant::now();
    let light = q.balanced(&pool.snapshot(), &flow(2), deadline()).await;
    assert_eq!(started.elapsed(), Duration::from_millis(20));
    let borrowed = light.expect("a borrowed slot");
    assert_eq!(borrowed.agent().outstanding(), 2, "one over the limit of 1");
}
