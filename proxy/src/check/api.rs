//! Raw reads through the kube client, as JSON: `check` looks at a few fields of many kinds
//! (some of them custom resources that may not be installed), so typed APIs would add a type
//! per kind and a discovery round-trip for nothing.

use std::collections::BTreeMap;

use serde_json::Value;

/// A read that failed for another reason than "not found".
pub(crate) type Error = kube::Error;

/// `GET path` as JSON; `Ok(None)` when the API server answers 404 (no such object, or no such
/// kind: its CRD is not installed).
pub(crate) async fn get(client: &kube::Client, path: &str) -> Result<Option<Value>, Error> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a GET request builds");
    match client.request::<Value>(request).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The items of a list at `path` (with `labelSelector` when given); `Ok(None)` on 404.
pub(crate) async fn list(
    client: &kube::Client,
    path: &str,
    selector: Option<&str>,
) -> Result<Option<Vec<Value>>, Error> {
    let path = match selector {
        Some(s) => format!(
            "{path}?labelSelector={}",
            s.replace('=', "%3D").replace('/', "%2F")
        ),
        None => path.to_owned(),
    };
    Ok(get(client, &path).await?.map(|v| match v.get("items") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }))
}

/// `GET` of a pod's port through the API server's pod proxy, as text.
pub(crate) async fn pod_get(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> Result<String, Error> {
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy{path}"
    ))
    .body(Vec::new())
    .expect("a GET request builds");
    client.request_text(request).await
}

/// `metadata.name` of an object.
pub(crate) fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// `metadata.labels` of an object.
pub(crate) fn labels(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A read error as one line for a finding.
pub(crate) fn describe(e: &Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "the API server answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        other => format!("{other}"),
    }
}
