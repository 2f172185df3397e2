//! Every other kind, read-only: objects the test stores as JSON and a client gets or lists, for
//! `sigsci-proxy check` (Namespaces, Secrets, Services, DaemonSets, HPAs, ScaledObjects,
//! PodMonitors, PrometheusRules, Prometheuses, the external metrics API...). A kind is served
//! once the test stores an object of it or [registers](FakeApiServer::register_kind) it;
//! until then its paths answer 404, as an API server without that CRD does.
//!
//! Paths: `{prefix}/namespaces/{ns}/{plural}[/{name}]` (namespaced), `{prefix}/{plural}` (a
//! cluster-scoped kind, or every namespace's objects of a namespaced one) and
//! `{prefix}/{plural}/{name}`, where `prefix` is `/api/v1` or `/apis/{group}/{version}`.
//! Also `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: allowed unless the test
//! [denied](FakeApiServer::deny) that verb on that resource.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::query::selects;
use crate::reply::{Body, full, status};
use crate::server::FakeApiServer;
use crate::state::State;

/// A path this module serves: the kind's prefix and plural, the namespace and the name.
pub(crate) struct Path {
    prefix: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
}

impl FakeApiServer {
    /// Serves `plural` under `prefix` (`/api/v1`, `/apis/monitoring.coreos.com/v1`), with no
    /// objects yet: lists answer empty instead of 404.
    pub fn register_kind(&self, prefix: &str, plural: &str) {
        self.state()
            .objects
            .kinds
            .entry((prefix.to_owned(), plural.to_owned()))
            .or_default();
    }

    /// Stores `object` (replacing one of the same namespace and name) as a `plural` of
    /// `prefix`; namespace and name come from its `metadata`.
    pub fn put_object(&self, prefix: &str, plural: &str, object: Value) {
        let mut state = self.state();
        state.rv += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let list = state
            .objects
            .kinds
            .entry((prefix.to_owned(), plural.to_owned()))
            .or_default();
        let key = |o: &Value| {
            (
                o["metadata"]["namespace"].clone(),
                o["metadata"]["name"].clone(),
            )
        };
        list.retain(|o| key(o) != key(&object));
        list.push(object);
    }

    /// Makes self-subject access reviews of `verb` on `resource` (a plural) answer denied.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.state()
            .objects
            .denied
            .insert((verb.to_owned(), resource.to_owned()));
    }
}

impl Path {
    pub(crate) fn is_review(&self) -> bool {
        self.prefix == "/apis/authorization.k8s.io/v1" && self.plural == "selfsubjectaccessreviews"
    }

    pub(crate) fn is_named(&self) -> bool {
        self.name.is_some()
    }

    /// The plural, as [`Logged::resource`](crate::Logged::resource) names it.
    pub(crate) fn resource(&self) -> String {
        self.plural.clone()
    }

    pub(crate) fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// Reads a path into its parts; `None` if it is not one of the shapes above.
pub(crate) fn parse(path: &str) -> Option<Path> {
    let (prefix, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("/api/v1".to_owned(), rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut parts = rest.splitn(3, '/');
        let (group, version, rest) = (parts.next()?, parts.next()?, parts.next()?);
        (format!("/apis/{group}/{version}"), rest)
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, plural, name) = match segments.as_slice() {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    Some(Path {
        prefix,
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

/// `GET` of a path: the object, or the list (filtered by the equality `selector`).
pub(crate) fn get(state: &State, path: &Path, selector: &[(String, String)]) -> Response<Body> {
    let Some(objects) = state
        .objects
        .kinds
        .get(&(path.prefix.clone(), path.plural.clone()))
    else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let in_namespace = |o: &&Value| {
        path.namespace
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
    };
    if let Some(name) = &path.name {
        return match objects
            .iter()
            .filter(in_namespace)
            .find(|o| o["metadata"]["name"].as_str() == Some(name))
        {
            Some(o) => full(StatusCode::OK, o),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", path.plural),
            ),
        };
    }
    let items: Vec<&Value> = objects
        .iter()
        .filter(in_namespace)
        .filter(|o| selects(selector, labels(o).as_ref()))
        .collect();
    full(
        StatusCode::OK,
        &json!({"kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    )
}

/// `POST .../selfsubjectaccessreviews`: the review with its `status.allowed`.
pub(crate) fn review(state: &State, body: Option<&Value>) -> Response<Body> {
    let mut review = body.cloned().unwrap_or_else(|| json!({}));
    let attrs = &review["spec"]["resourceAttributes"];
    let verb = attrs["verb"].as_str().unwrap_or("").to_owned();
    let resource = attrs["resource"].as_str().unwrap_or("").to_owned();
    let allowed = !state.objects.denied.contains(&(verb, resource));
    review["status"] = json!({"allowed": allowed});
    full(StatusCode::CREATED, &review)
}

fn labels(object: &Value) -> Option<BTreeMap<String, String>> {
    let map = object["metadata"]["labels"].as_object()?;
    Some(
        map.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
    )
}
