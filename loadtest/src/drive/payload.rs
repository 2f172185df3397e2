//! Realistic RPC payloads: what a module sends for one HTTP request.

use crate::rpc::{Header, RPCMsgIn, RPCMsgIn2};

/// Shape of the simulated HTTP traffic.
#[derive(Debug, Clone)]
pub struct PayloadShape {
    /// Request headers per request (default 12).
    pub headers: usize,
    /// URI length in bytes (default 80).
    pub uri_len: usize,
    /// Request body bytes; 0 = GET without body (default 0).
    pub body_size: usize,
}

impl Default for PayloadShape {
    fn default() -> Self {
        PayloadShape {
            headers: 12,
            uri_len: 80,
            body_size: 0,
        }
    }
}

const BASE_HEADERS: &[(&str, &str)] = &[
    ("Host", "shop.example.com"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    ),
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Connection", "keep-alive"),
    (
        "Cookie",
        "session=5f2b8c1e9a7d4e3f8b6a2c1d0e9f8a7b; theme=dark",
    ),
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-Proto", "https"),
    ("Referer", "https://shop.example.com/catalog"),
];

/// The attack string put in the URI of attack transactions (the default simulator blocks it).
pub const ATTACK: &str = "<script>alert(1)</script>";

impl PayloadShape {
    /// The PreRequest/PostRequest map for transaction `seq`.
    pub fn request(&self, seq: u64, attack: bool, now_millis: i64) -> RPCMsgIn {
        let mut uri = format!("/api/v1/items/{seq}?q=");
        if attack {
            uri.push_str(ATTACK);
        }
        while uri.len() < self.uri_len {
            uri.push('x');
        }
        let mut headers: Vec<Header> = BASE_HEADERS
            .iter()
            .take(self.headers)
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        for i in headers.len()..self.headers {
            headers.push((format!("X-App-Header-{i}"), format!("value-{seq}-{i}")));
        }
        let (method, body) = if self.body_size > 0 {
            headers.push((
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            let mut b = String::with_capacity(self.body_size);
            b.push_str("data=");
            while b.len() < self.body_size {
                b.push('a');
            }
            b.truncate(self.body_size);
            ("POST", b)
        } else {
            ("GET", String::new())
        };
        RPCMsgIn {
            AccessKeyID: "loadtest".into(),
            ModuleVersion: "sigsci-module-loadtest 0.1.0".into(),
            ServerVersion: "loadtest".into(),
            ServerFlavor: "emulator".into(),
            ServerName: "shop.example.com".into(),
            Timestamp: now_millis / 1000,
            NowMillis: now_millis,
            RemoteAddr: "203.0.113.7".into(),
            Method: method.into(),
            Scheme: "https".into(),
            URI: uri,
            Protocol: "HTTP/1.1".into(),
            TLSProtocol: "tls1.3".into(),
            TLSCipher: "TLS_AES_128_GCM_SHA256".into(),
            HeadersIn: headers,
            PostBody: body,
            ..RPCMsgIn::default()
        }
    }

    /// The PostRequest for an anomalous response to `req`.
    pub fn post_request(&self, mut req: RPCMsgIn, code: i32) -> RPCMsgIn {
        req.PostBody.clear();
        req.WAFResponse = 200;
        req.ResponseCode = code;
        req.ResponseMillis = 3;
        req.ResponseSize = 1234;
        req.HeadersOut = response_headers();
        req
    }

    /// The UpdateRequest for a flagged request.
    pub fn update_request(&self, request_id: String, code: i32) -> RPCMsgIn2 {
        RPCMsgIn2 {
            RequestID: request_id,
            ResponseCode: code,
            ResponseMillis: 3,
            ResponseSize: 1234,
            HeadersOut: response_headers(),
        }
    }
}

fn response_headers() -> Vec<Header> {
    vec![
        ("Content-Type".into(), "text/html; charset=utf-8".into()),
        ("Content-Length".into(), "1234".into()),
    ]
}
