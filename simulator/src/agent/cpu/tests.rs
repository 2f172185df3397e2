//! The CPU shapes on paused time: capacity is exact, and processor sharing slows every call in
//! progress as calls arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cpu, Shape, Sharing};
use crate::units::ServiceTime;

const MS: Duration = Duration::from_millis(1);

/// Starts `per_tick` calls of `service` every `every` for `span` (an open loop) and counts the
/// calls done by the end.
async fn open_loop(
    cpu: Arc<Cpu>,
    every: Duration,
    per_tick: usize,
    service: ServiceTime,
    span: Duration,
) -> u64 {
    let end = Instant::now() + span;
    let done = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(every);
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..per_tick {
            let (cpu, done) = (cpu.clone(), done.clone());
            tokio::spawn(async move {
                cpu.work(service.sample(), Duration::ZERO).await;
                done.fetch_add(1, Relaxed);
            });
        }
    }
    tokio::time::sleep_until(end).await;
    done.load(Relaxed)
}

#[tokio::test(start_paused = true)]
async fn both_shapes_serve_exactly_their_capacity() {
    // Offered exactly the capacity of 2 workers: a capacity lost to the 1 ms timer would leave
    // a backlog growing for 10 s, and the calls done far behind the calls offered.
    let loads = [(MS, 10, Duration::from_micros(200)), (5 * MS, 1, 10 * MS)];
    for shape in [Shape::Fifo, Shape::Ps] {
        for (every, per_tick, service) in loads {
            let stop = CancellationToken::new();
            let cpu = Arc::new(Cpu::new(shape, 2, &stop));
            let span = Duration::from_secs(10);
            let fixed = ServiceTime::Fixed(service);
            let served = open_loop(cpu, every, per_tick, fixed, span).await;
            let capacity = (2.0 * span.as_secs_f64() / service.as_secs_f64()) as u64;
            // Calls still in progress at the end: a tick's worth and the sharing's few.
            assert!(
                served <= capacity && served + 2 * per_tick as u64 + 4 >= capacity,
                "{shape} at {service:?}: {served} served, capacity {capacity}"
            );
            stop.cancel();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn random_service_times_keep_the_capacity_whatever_the_timer() {
    // Completions at arbitrary instants, wake-ups on whole milliseconds: a model that lost the
    // time between a completion and its wake-up would fall far behind 95 % of its capacity.
    for shape in [Shape::Fifo, Shape::Ps] {
        let stop = CancellationToken::new();
        let cpu = Arc::new(Cpu::new(shape, 2, &stop));
        let mean = Duration::from_micros(200);
        let span = Duration::from_secs(10);
        let service = ServiceTime::Exponential(mean);
        let served = open_loop(cpu, 20 * MS, 190, service, span).await;
        let offered = 190 * 500;
        assert!(
            served + 1_500 >= offered,
            "{shape}: {served} of {offered} served"
        );
        stop.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn equal_calls_started_together_finish_together_after_n_times_service_over_workers() {
    let ps = Arc::new(Sharing::new(2));
    let stop = CancellationToken::new();
    tokio::spawn(ps.clone().run(stop.clone()));
    let t0 = Instant::now();
    let calls: Vec<_> = (0..10).map(|_| ps.submit(10 * MS)).collect();
    for c in calls {
        c.await.unwrap();
        let took = t0.elapsed();
        // 10 calls of 10 ms on 2 processors: 50 ms, quantized by the 1 ms timer.
        assert!(
            took >= 50 * MS && took <= 51 * MS,
            "finished after {took:?}"
        );
    }
    assert_eq!(ps.in_progress(), 0);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_arrival_slows_the_call_in_progress_and_its_departure_speeds_it_up() {
    let ps = Arc::new(Sharing::new(1));
    let stop = CancellationToken::new();
    tokio::spawn(ps.clone().run(stop.clone()));
    let t0 = Instant::now();
    let first = ps.submit(10 * MS);
    tokio::time::sleep(5 * MS).await;
    // 5 ms of work done; from now on both share one processor: the first needs 10 ms more, then
    // the second (5 ms of 20 done) runs alone for its last 5 ms.
    let second = ps.submit(20 * MS);
    first.await.unwrap();
    let t1 = t0.elapsed();
    assert!(t1 >= 15 * MS && t1 <= 16 * MS, "first after {t1:?}");
    second.await.unwrap();
    let t2 = t0.elapsed();
    assert!(t2 >= 30 * MS && t2 <= 31 * MS, "second after {t2:?}");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_call_nobody_waits_for_still_takes_its_share() {
    let ps = Arc::new(Sharing::new(1));
    let stop = CancellationToken::new();
    tokio::spawn(ps.clone().run(stop.clone()));
    let t0 = Instant::now();
    // The caller of the first gives up at once; the agent keeps working on it.
    drop(ps.submit(10 * MS));
    ps.submit(10 * MS).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= 20 * MS && took <= 21 * MS,
        "finished after {took:?}"
    );
    stop.cancel();
}
