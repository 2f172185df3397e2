//! Membership sources feeding a real pool: the static list, a watched file (rewritten, broken,
//! repaired) and DNS for `localhost`. Real time, short polls, every wait bounded.

use std::time::Duration;

use agent_pool::{Address, Endpoint, Pool, PoolConfig, SourceState, Update, Updates, source};
use futures::StreamExt;

/// Bound for any single expected update; generous for a loaded CI box.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

async fn next(updates: &mut Updates) -> Update {
    tokio::time::timeout(WAIT, updates.next())
        .await
        .expect("an update in time")
        .expect("stream open")
}

fn addresses(update: &Update) -> Vec<String> {
    match update {
        Update::Reset(eps) => eps.iter().map(|e| e.address.to_string()).collect(),
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// Replaces the file's contents atomically (write + rename), as an orchestrator should.
fn write(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_static_list_is_one_reset_then_silence() {
    let eps = vec![Endpoint::new("127.0.0.1:9999".parse().unwrap())];
    let mut updates = source::fixed(eps.clone());
    assert_eq!(next(&mut updates).await, Update::Reset(eps));
    let more = tokio::time::timeout(Duration::from_millis(50), updates.next()).await;
    assert!(
        more.is_err(),
        "no further update, and the stream does not end"
    );
}

#[tokio::test]
async fn the_file_source_follows_rewrites_and_survives_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.json");
    write(&path, r#"["127.0.0.1:10001", "127.0.0.1:10002"]"#);
    let mut updates = source::file(path.clone(), POLL);
    assert_eq!(
        addresses(&next(&mut updates).await),
        ["127.0.0.1:10001", "127.0.0.1:10002"]
    );

    write(
        &path,
        r#"["127.0.0.1:10002", {"address": "127.0.0.1:10003", "state": "terminating"}]"#,
    );
    let update = next(&mut updates).await;
    assert_eq!(addresses(&update), ["127.0.0.1:10002", "127.0.0.1:10003"]);
    let Update::Reset(eps) = update else {
        unreachable!()
    };
    assert_eq!(eps[1].state, SourceState::Terminating);

    // Broken, half-written, then missing: no update at all (the pool keeps its agents)...
    write(&path, r#"["127.0.0.1:10002", {"address": "#);
    let quiet = tokio::time::timeout(POLL * 10, updates.next()).await;
    assert!(quiet.is_err(), "a bad file yields nothing: {quiet:?}");
    std::fs::write(&path, "").unwrap();
    std::fs::remove_file(&path).unwrap();
    let quiet = tokio::time::timeout(POLL * 10, updates.next()).await;
    assert!(quiet.is_err(), "a missing file yields nothing: {quiet:?}");

    // ...and the next good file is picked up.
    write(
        &path,
        "[[agents]]\naddress = \"127.0.0.1:10004\"\nid = \"agent-4\"\n",
    );
    // The name ends in .json: TOML is rejected there. Rename-free fix: write JSON.
    let quiet = tokio::time::timeout(POLL * 10, updates.next()).await;
    assert!(quiet.is_err(), "TOML in a .json file is rejected");
    write(
        &path,
        r#"[{"address": "127.0.0.1:10004", "id": "agent-4"}]"#,
    );
    let update = next(&mut updates).await;
    let Update::Reset(eps) = update else {
        panic!("expected a reset")
    };
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].id.as_str(), "agent-4");
}

#[tokio::test]
async fn a_toml_file_drives_a_running_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.toml");
    write(
        &path,
        "[[agents]]\naddress = \"127.0.0.1:10001\"\n[[agents]]\naddress = \"127.0.0.1:10002\"\n",
    );
    let pool = Pool::new(PoolConfig::default());
    let task = tokio::spawn({
        let pool = pool.clone();
        async move { pool.run(source::file(path.clone(), POLL)).await }
    });
    wait_for(|| pool.snapshot().ready_len() == 2).await;
    let first = pool.snapshot().agents()[0].clone();

    write(
        &dir.path().join("agents.toml"),
        "[[agents]]\naddress = \"127.0.0.1:10001\"\n",
    );
    wait_for(|| pool.snapshot().ready_len() == 1).await;
    let snap = pool.snapshot();
    assert_eq!(
        snap.agents().len(),
        2,
        "the removed agent stays for the grace period"
    );
    assert!(std::sync::Arc::ptr_eq(&snap.pick().unwrap(), &first));
    task.abort();
}

#[tokio::test]
async fn dns_resolves_localhost() {
    let mut updates = source::dns("localhost".to_owned(), 9999, Duration::from_millis(100));
    let got = addresses(&next(&mut updates).await);
    assert!(!got.is_empty());
    for a in &got {
        let addr: Address = a.parse().unwrap();
        let Address::Tcp(sa) = addr else {
            panic!("{a}")
        };
        assert!(sa.ip().is_loopback() && sa.port() == 9999, "{a}");
    }
    // Same records: no further update.
    let quiet = tokio::time::timeout(Duration::from_millis(350), updates.next()).await;
    assert!(quiet.is_err(), "unchanged records yield nothing");
}

async fn wait_for(cond: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition in time");
}

#[tokio::test]
async fn run_applies_the_source_and_ticks_the_hints() {
    let pool = Pool::new(PoolConfig::default());
    let eps: Vec<_> = (1..=3)
        .map(|i| Endpoint::new(format!("127.0.0.1:1000{i}").parse().unwrap()))
        .collect();
    let task = tokio::spawn({
        let pool = pool.clone();
        async move { pool.run(source::fixed(eps)).await }
    });
    wait_for(|| pool.hints().known_agents == 3).await;
    assert_eq!(pool.hints().ready_agents, 3);
    assert_eq!(pool.hints().recommended, 1);
    task.abort();
}
