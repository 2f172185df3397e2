//! The merge rules, on hand-written slices (the watch itself is tested against a fake API
//! server in `tests/it/kubernetes.rs`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::merge::merge;
use crate::{Endpoint, SourceState};

fn port(name: &str, port: i32, protocol: &str) -> EndpointPort {
    EndpointPort {
        name: Some(name.into()),
        port: Some(port),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn slice(
    name: &str,
    address_type: &str,
    ports: Vec<EndpointPort>,
    endpoints: Vec<SliceEndpoint>,
) -> Arc<EndpointSlice> {
    Arc::new(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        address_type: address_type.into(),
        ports: Some(ports),
        endpoints,
    })
}

fn ep(
    address: &str,
    pod: Option<&str>,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> SliceEndpoint {
    SliceEndpoint {
        addresses: vec![address.into()],
        conditions: Some(EndpointConditions {
            ready,
            serving,
            terminating,
        }),
        target_ref: pod.map(|p| ObjectReference {
            kind: Some("Pod".into()),
            name: Some(p.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ids_and_states(
    slices: &[Arc<EndpointSlice>],
    port_name: Option<&str>,
) -> Vec<(String, String, SourceState)> {
    merge(slices, port_name, "ns")
        .members
        .into_values()
        .map(|e: Endpoint| (e.id.to_string(), e.address.to_string(), e.state))
        .collect()
}

#[test]
fn conditions_decide_ready_terminating_or_absent() {
    let s = slice(
        "a",
        "IPv4",
        vec![port("rpc", 9999, "TCP")],
        vec![
            ep("10.0.0.1", Some("p1"), Some(true), Some(true), Some(false)),
            ep("10.0.0.2", Some("p2"), None, None, None), // nil ready counts as ready
            ep("10.0.0.3", Some("p3"), Some(false), Some(true), Some(true)), // draining
            ep("10.0.0.4", Some("p4"), Some(false), Some(false), Some(true)), // terminating, not serving
            ep(
                "10.0.0.5",
                Some("p5"),
                Some(false),
                Some(false),
                Some(false),
            ), // not ready
            ep("10.0.0.6", Some("p6"), Some(true), Some(true), Some(true)), // publishNotReadyAddresses
        ],
    );
    assert_eq!(
        ids_and_states(&[s], Some("rpc")),
        vec![
            ("ns/p1".into(), "10.0.0.1:9999".into(), SourceState::Ready),
            ("ns/p2".into(), "10.0.0.2:9999".into(), SourceState::Ready),
            (
                "ns/p3".into(),
                "10.0.0.3:9999".into(),
                SourceState::Terminating
            ),
            (
                "ns/p6".into(),
                "10.0.0.6:9999".into(),
                SourceState::Terminating
            ),
        ]
    );
}

#[test]
fn endpoints_that_are_not_members_are_still_listed() {
    let s = slice(
        "a",
        "IPv4",
        vec![port("rpc", 9999, "TCP")],
        vec![
            ep("10.0.0.1", Some("p1"), Some(true), Some(true), Some(false)),
            ep(
                "10.0.0.5",
                Some("p5"),
                Some(false),
                Some(false),
                Some(false),
            ),
        ],
    );
    let view = merge(&[s], None, "ns");
    assert_eq!(view.members.len(), 1);
    let listed: Vec<&str> = view.listed.iter().map(|id| id.as_str()).collect();
    assert_eq!(
        listed,
        ["ns/p1", "ns/p5"],
        "a not-ready pod did not move: remove it at once"
    );
}

#[test]
fn port_is_chosen_by_name_else_first_tcp_port() {
    let ports = vec![
        port("metrics", 9090, "TCP"),
        port("dns", 53, "UDP"),
        port("rpc", 9999, "TCP"),
    ];
    let s = slice(
        "a",
        "IPv4",
        ports,
        vec![ep("10.0.0.1", None, None, None, None)],
    );
    let by_name = ids_and_states(std::slice::from_ref(&s), Some("rpc"));
    assert_eq!(by_name[0].1, "10.0.0.1:9999");
    let first = ids_and_states(std::slice::from_ref(&s), None);
    assert_eq!(first[0].1, "10.0.0.1:9090");
    assert!(
        ids_and_states(std::slice::from_ref(&s), Some("dns")).is_empty(),
        "UDP ports are never agents"
    );
    assert!(
        ids_and_states(&[s], Some("nope")).is_empty(),
        "a slice without the named port contributes nothing"
    );
}

#[test]
fn identity_is_the_pod_else_the_address_and_fqdn_slices_are_skipped() {
    let rpc = || vec![port("rpc", 9999, "TCP")];
    let slices = [
        slice(
            "v4",
            "IPv4",
            rpc(),
            vec![ep("10.0.0.1", None, None, None, None)],
        ),
        slice(
            "v6",
            "IPv6",
            rpc(),
            vec![ep("fd00::1", Some("p1"), None, None, None)],
        ),
        slice(
            "fqdn",
            "FQDN",
            rpc(),
            vec![ep("agent.example", Some("p2"), None, None, None)],
        ),
    ];
    assert_eq!(
        ids_and_states(&slices, Some("rpc")),
        vec![
            (
                "10.0.0.1:9999".into(),
                "10.0.0.1:9999".into(),
                SourceState::Ready
            ),
            ("ns/p1".into(), "[fd00::1]:9999".into(), SourceState::Ready),
        ]
    );
}

#[test]
fn an_endpoint_in_two_slices_is_one_member_whatever_the_order() {
    let rpc = || vec![port("rpc", 9999, "TCP")];
    let a = slice(
        "a",
        "IPv4",
        rpc(),
        vec![ep(
            "10.0.0.1",
            Some("p1"),
            Some(false),
            Some(true),
            Some(true),
        )],
    );
    let b = slice(
        "b",
        "IPv4",
        rpc(),
        vec![ep(
            "10.0.0.1",
            Some("p1"),
            Some(true),
            Some(true),
            Some(false),
        )],
    );
    let one = ids_and_states(&[a.clone(), b.clone()], None);
    let other = ids_and_states(&[b, a], None);
    assert_eq!(one, other);
    assert_eq!(
        one,
        vec![("ns/p1".into(), "10.0.0.1:9999".into(), SourceState::Ready)]
    );
}
