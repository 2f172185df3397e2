//! The answers every route builds: a JSON body with its status, an API `Status` for errors, a
//! newline-terminated line of a watch stream, and the (namespace, name) key of an object.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// Every response body: a whole JSON document, or a watch stream.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A JSON answer.
pub(crate) fn full(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).expect("json"))).boxed())
        .expect("response")
}

/// A `Status` object, as the API server answers errors.
pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

/// A JSON watch-event or list line, newline-terminated.
pub(crate) fn to_line(value: &Value) -> Bytes {
    let mut text = serde_json::to_vec(value).expect("json");
    text.push(b'\n');
    Bytes::from(text)
}

/// The parts of a namespaced object every collection here needs.
pub(crate) fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String) {
    (
        meta.namespace.clone().expect("object namespace"),
        meta.name.clone().expect("object name"),
    )
}
