//! The `--agents-k8s NAMESPACE/SERVICE[:PORTNAME]` value: which Service's EndpointSlices to
//! watch and which of their ports the agents listen on.

use std::fmt;
use std::str::FromStr;

/// A parsed `NAMESPACE/SERVICE[:PORTNAME]`, e.g. `sigsci/sigsci-agent:rpc`.
///
/// Names are checked the way the API server checks them, so a typo fails at start-up with the
/// option's text rather than as an empty membership later: the namespace is a DNS-1123 label,
/// the Service a DNS-1035 label (both at most 63 characters of `a-z`, `0-9`, `-`), the port name
/// an IANA service name (at most 15 characters of `a-z`, `0-9`, `-`, with at least one letter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    /// Namespace of the Service (and of its EndpointSlices).
    pub namespace: String,
    /// Service name: slices are selected by `kubernetes.io/service-name=<service>`.
    pub service: String,
    /// Name of the Service port the agents' RPC listens on; `None` picks the slice's only port
    /// (or its first TCP port when it has several).
    pub port_name: Option<String>,
}

/// Why a `NAMESPACE/SERVICE[:PORTNAME]` text was rejected. The message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `/` between namespace and service.
    #[error(
        "invalid Kubernetes service {text:?}: expected NAMESPACE/SERVICE[:PORTNAME], e.g. sigsci/sigsci-agent:rpc"
    )]
    Shape {
        /// The rejected text.
        text: String,
    },
    /// The namespace is not a DNS-1123 label.
    #[error("invalid Kubernetes service {text:?}: namespace {namespace:?} {why}")]
    Namespace {
        /// The rejected text.
        text: String,
        /// The namespace part.
        namespace: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The service name is not a DNS-1035 label.
    #[error("invalid Kubernetes service {text:?}: service name {service:?} {why}")]
    Service {
        /// The rejected text.
        text: String,
        /// The service part.
        service: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The port name is not an IANA service name.
    #[error("invalid Kubernetes service {text:?}: port name {port:?} {why}")]
    PortName {
        /// The rejected text.
        text: String,
        /// The port-name part.
        port: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl ServiceRef {
    /// The label selector that picks this Service's EndpointSlices.
    pub fn label_selector(&self) -> String {
        format!("{}={}", super::SERVICE_NAME_LABEL, self.service)
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if let Some(port) = &self.port_name {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl FromStr for ServiceRef {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let owned = || text.to_owned();
        let (namespace, rest) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| SpecError::Shape { text: owned() })?;
        let (service, port_name) = match rest.split_once(':') {
            Some((service, port)) => (service, Some(port)),
            None => (rest, None),
        };
        if let Err(why) = dns_label(namespace, false) {
            return Err(SpecError::Namespace {
                text: owned(),
                namespace: namespace.to_owned(),
                why,
            });
        }
        if let Err(why) = dns_label(service, true) {
            return Err(SpecError::Service {
                text: owned(),
                service: service.to_owned(),
                why,
            });
        }
        if let Some(port) = port_name
            && let Err(why) = port_name_ok(port)
        {
            return Err(SpecError::PortName {
                text: owned(),
                port: port.to_owned(),
                why,
            });
        }
        Ok(ServiceRef {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            port_name: port_name.map(str::to_owned),
        })
    }
}

fn lower_alnum_dash(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// DNS-1123 label (namespaces); with `letter_first`, DNS-1035 (Service names).
fn dns_label(s: &str, letter_first: bool) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if !lower_alnum_dash(s) {
        return Err("may contain only lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    if letter_first && !s.as_bytes()[0].is_ascii_lowercase() {
        return Err("must start with a letter");
    }
    Ok(())
}

/// IANA_SVC_NAME, as Kubernetes validates named ports.
fn port_name_ok(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty (leave out the ':' to use the only port)");
    }
    if s.len() > 15 {
        return Err("is longer than 15 characters");
    }
    if !lower_alnum_dash(s) {
        return Err("may contain only lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return Err("must not start or end with '-' nor contain '--'");
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("must contain a letter (a number is not a port name)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_service_and_optional_port_name() {
        let r: ServiceRef = "sigsci/sigsci-agent:rpc".parse().unwrap();
        assert_eq!(r.namespace, "sigsci");
        assert_eq!(r.service, "sigsci-agent");
        assert_eq!(r.port_name.as_deref(), Some("rpc"));
        assert_eq!(r.to_string(), "sigsci/sigsci-agent:rpc");
        assert_eq!(
            r.label_selector(),
            "kubernetes.io/service-name=sigsci-agent"
        );

        let r: ServiceRef = "default/agents".parse().unwrap();
        assert_eq!(r.port_name, None);
        assert_eq!(r.to_string(), "default/agents");
    }

    #[test]
    fn rejects_malformed_specs_naming_the_bad_part() {
        let cases = [
            ("sigsci-agent", "expected NAMESPACE/SERVICE"),
            ("/agents", "namespace \"\" is empty"),
            ("Sigsci/agents", "namespace \"Sigsci\" may contain only"),
            ("sigsci/", "service name \"\" is empty"),
            ("sigsci/9agents", "must start with a letter"),
            ("sigsci/agents-", "must start and end"),
            ("sigsci/a/b", "service name \"a/b\""),
            ("sigsci/agents:", "port name \"\" is empty"),
            ("sigsci/agents:9999", "must contain a letter"),
            ("sigsci/agents:much-too-long-port", "longer than 15"),
            ("sigsci/agents:a--b", "'--'"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<ServiceRef>().expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(
                err.contains(&format!("{text:?}")),
                "{text}: message quotes the input: {err}"
            );
        }
    }
}
