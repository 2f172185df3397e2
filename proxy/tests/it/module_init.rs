//! Every agent learns every module. A module's one `RPC.ModuleInit` reaches
//! every agent once, and an agent that joins later gets it before it takes work.

use std::time::Duration;

use crate::support::*;
use serde::Serialize;

/// `RPC.ModuleInit`'s params as the Go module sends them.
#[derive(Serialize)]
#[allow(non_snake_case)]
struct Init {
    ModuleVersion: &'static str,
    ServerVersion: &'static str,
    ServerFlavor: &'static str,
    Timestamp: i64,
    NowMillis: i64,
}

const INIT: Init = Init {
    ModuleVersion: "sigsci-module-golang 1.15.0",
    ServerVersion: "go1.22.4",
    ServerFlavor: "",
    Timestamp: 1_700_000_000,
    NowMillis: 1_700_000_000_000,
};

fn inits(agents: &[&Agent]) -> Vec<u64> {
    agents.iter().map(|a| a.stats().moduleinits).collect()
}

const COPIES: &str = r#"sigsci_proxy_module_init_copies_total{how="fan_out",result="ok"}"#;
const REPLAYS: &str = r#"sigsci_proxy_module_init_copies_total{how="replay",result="ok"}"#;

#[tokio::test]
async fn one_module_init_reaches_every_agent_once_and_an_agent_joining_later() {
    // Asserts counters: no other in-process proxy may count meanwhile.
    let alone = recorder::alone().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.json");
    let (a, b, c) = (
        Agent::start().await,
        Agent::start().await,
        Agent::start().await,
    );
    write_agents_file(&file, &[(&a, "ready"), (&b, "ready"), (&c, "ready")]);
    let proxy = alone
        .start_proxy(sigsci_proxy::config::Options {
            agents_file: Some(file.clone()),
            agents_file_poll: Some(sigsci_proxy::config::Dur(Duration::from_millis(20))),
            ..options()
        })
        .await;
    let copies = metric(proxy.admin, COPIES).await;
    let replays = metric(proxy.admin, REPLAYS).await;
    // At once: the agents need not have been enrolled by the proxy's 100 ms tick yet.
    let (msgid, err, reply) = call(proxy.rpc, 3, rpc::MODULE_INIT, &INIT).await;
    assert_eq!((msgid, err), (3, None));
    assert_eq!(out(reply).WAFResponse, 200, "the first agent's answer");
    wait_until("each agent got the ModuleInit", async || {
        inits(&[&a, &b, &c]) == [1, 1, 1]
    })
    .await;
    // Several ticks later, still once each: no replay to agents that were copied.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(inits(&[&a, &b, &c]), [1, 1, 1]);
    assert!(metric(proxy.admin, COPIES).await - copies >= 2.0);

    // A fourth agent joins: it gets the module before it takes work.
    let d = Agent::start().await;
    write_agents_file(
        &file,
        &[(&a, "ready"), (&b, "ready"), (&c, "ready"), (&d, "ready")],
    );
    wait_until("the fourth agent took work", async || {
        let _ = call(proxy.rpc, 7, rpc::PRE_REQUEST, &pre_request()).await;
        d.pre() > 0
    })
    .await;
    assert_eq!(d.stats().moduleinits, 1, "replayed once");
    assert_eq!(
        d.stats().prerequests_before_module_init,
        0,
        "no work before the replay"
    );
    assert_eq!(inits(&[&a, &b, &c]), [1, 1, 1], "nothing twice");
    assert!(metric(proxy.admin, REPLAYS).await - replays >= 1.0);

    // The same module again (another instance starting): copied to every agent again, but
    // remembered once.
    let (_, err, _) = call(proxy.rpc, 4, rpc::MODULE_INIT, &INIT).await;
    assert_eq!(err, None);
    wait_until("each agent got the second ModuleInit", async || {
        inits(&[&a, &b, &c, &d]) == [2, 2, 2, 2]
    })
    .await;
    assert_eq!(metric(proxy.admin, "sigsci_proxy_modules_known").await, 1.0);
    proxy.stop().await;
}
