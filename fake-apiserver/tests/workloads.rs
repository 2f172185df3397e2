//! The fake's Deployments, Pods and pod proxy through the real `kube` client: what loadtest's
//! cluster mode relies on, each answer as the real API server gives it.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use fake_apiserver::{Event, FakeApiServer};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

const NS: &str = "sigsci";

fn meta(name: &str, app: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            app.to_string(),
        )])),
        ..Default::default()
    }
}

fn deployment(replicas: i32) -> Deployment {
    Deployment {
        metadata: meta("sigsci-agent", "sigsci-agent"),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: meta("", "sigsci-agent").labels,
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn scale_subresource_get_patch_and_replace_change_replicas_and_tell_subscribers() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(deployment(2));
    let mut events = fake.events();
    let api: Api<Deployment> = Api::namespaced(fake.client(), NS);

    let scale = api.get_scale("sigsci-agent").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(
        scale.status.unwrap().selector.as_deref(),
        Some("app.kubernetes.io/name=sigsci-agent")
    );

    let patch = serde_json::json!({"spec": {"replicas": 5}});
    let scale = api
        .patch_scale(
            "sigsci-agent",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(5));
    assert_eq!(fake.replicas(NS, "sigsci-agent"), Some(5));

    let mut scale = scale;
    scale.spec.as_mut().unwrap().replicas = Some(1);
    api.replace_scale("sigsci-agent", &PostParams::default(), &scale)
        .await
        .unwrap();
    assert_eq!(fake.replicas(NS, "sigsci-agent"), Some(1));
    for want in [5, 1] {
        assert_eq!(
            events.recv().await.unwrap(),
            Event::Scaled {
                namespace: NS.into(),
                name: "sigsci-agent".into(),
                replicas: want
            }
        );
    }

    let missing = api.get_scale("nope").await.unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404),
        "{missing:?}"
    );
    let bad = serde_json::json!({"spec": {"replicas": -1}});
    let invalid = api
        .patch_scale("sigsci-agent", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .unwrap_err();
    assert!(
        matches!(&invalid, kube::Error::Api(s) if s.code == 422),
        "{invalid:?}"
    );
    let verbs: Vec<(&str, String)> = fake
        .requests()
        .iter()
        .map(|r| (r.verb, r.resource.clone()))
        .collect();
    assert_eq!(
        verbs[..3],
        [
            ("get", "deployments/scale".to_string()),
            ("patch", "deployments/scale".to_string()),
            ("update", "deployments/scale".to_string()),
        ]
    );
}

#[tokio::test]
async fn pods_list_by_selector_and_delete_now_or_gracefully() {
    let fake = FakeApiServer::start().await;
    for (name, app) in [
        ("agent-0", "sigsci-agent"),
        ("agent-1", "sigsci-agent"),
        ("proxy-0", "sigsci-proxy"),
    ] {
        fake.add_pod(Pod {
            metadata: meta(name, app),
            ..Default::default()
        });
    }
    let mut events = fake.events();
    let api: Api<Pod> = Api::namespaced(fake.client(), NS);
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let agents = ListParams::default().labels("app.kubernetes.io/name=sigsci-agent");
    assert_eq!(
        names(api.list(&agents).await.unwrap()),
        ["agent-0", "agent-1"]
    );

    // Grace 0: gone at once.
    api.delete("agent-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(names(api.list(&agents).await.unwrap()), ["agent-1"]);
    // Graceful: terminating, still listed, until the kubelet (the test) removes it.
    api.delete("agent-1", &DeleteParams::default())
        .await
        .unwrap();
    let listed = api.list(&agents).await.unwrap();
    assert!(listed.items[0].metadata.deletion_timestamp.is_some());
    assert_eq!(
        listed.items[0].metadata.deletion_grace_period_seconds,
        Some(30)
    );
    assert!(fake.remove_pod(NS, "agent-1"));
    assert!(api.list(&agents).await.unwrap().items.is_empty());

    let deleted: Vec<Option<i64>> = [events.recv().await, events.recv().await]
        .into_iter()
        .map(|e| match e.unwrap() {
            Event::PodDeleted {
                grace_period_seconds,
                ..
            } => grace_period_seconds,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(deleted, [Some(0), None]);
    let gone = api
        .delete("agent-1", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&gone, kube::Error::Api(s) if s.code == 404),
        "{gone:?}"
    );
}

/// A loopback server answering `METHOD PATH?QUERY BODY` as text.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let head = format!("{} {} ", req.method(), req.uri());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let text = head + &String::from_utf8_lossy(&body);
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn pod_proxy_forwards_to_the_mapped_loopback_port_and_503s_without_one() {
    let fake = FakeApiServer::start().await;
    fake.add_pod(Pod {
        metadata: meta("agent-0", "sigsci-agent"),
        ..Default::default()
    });
    // kube retries a 503 with backoff for minutes (its default server retry policy); the
    // answer itself is what is checked here.
    let mut config = kube::Config::new(format!("http://{}", fake.addr()).parse().unwrap());
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let call = |method: http::Method, path: &str, body: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("/api/v1/namespaces/{NS}/pods/{path}"))
            .body(body.as_bytes().to_vec())
            .unwrap();
        client.request_text(req)
    };
    let unmapped = call(http::Method::GET, "agent-0:9090/proxy/stats", "")
        .await
        .unwrap_err();
    assert!(
        matches!(&unmapped, kube::Error::Api(s) if s.code == 503),
        "{unmapped:?}"
    );

    fake.map_pod_port(NS, "agent-0", 9090, echo_server().await);
    let got = call(http::Method::GET, "agent-0:9090/proxy/stats?x=1", "")
        .await
        .unwrap();
    assert_eq!(got, "GET /stats?x=1 ");
    let posted = call(http::Method::POST, "agent-0:9090/proxy/fault?slow=4", "b")
        .await
        .unwrap();
    assert_eq!(posted, "POST /fault?slow=4 b");
    let other_port = call(http::Method::GET, "agent-0:9091/proxy/stats", "")
        .await
        .unwrap_err();
    assert!(
        matches!(&other_port, kube::Error::Api(s) if s.code == 503),
        "{other_port:?}"
    );

    // Removing the pod drops its mappings.
    fake.remove_pod(NS, "agent-0");
    let gone = call(http::Method::GET, "agent-0:9090/proxy/stats", "")
        .await
        .unwrap_err();
    assert!(
        matches!(&gone, kube::Error::Api(s) if s.code == 404),
        "{gone:?}"
    );
    assert!(fake.requests().iter().all(|r| r.verb == "proxy"));
}
