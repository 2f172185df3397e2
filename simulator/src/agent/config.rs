//! The simulator's configuration: what it listens on, how it decides and how fast, and the
//! faults it plays ([`Faults`]), set from flags or through the builder that
//! [`SimAgent::builder`](super::SimAgent::builder) returns. A file of its own so that the server
//! and the admin endpoints read it from below.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cpu::Shape;
use crate::addr::RpcAddr;
use crate::units::ServiceTime;

/// Faults that can be switched on at start (flags) or at run time (`POST /fault?...`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Close the listening socket: new connections are refused (ECONNREFUSED).
    pub refuse: bool,
    /// Accept connections and close them at once without reading.
    pub hangup: bool,
    /// Reset (TCP RST) every connection on its next request instead of answering.
    pub reset: bool,
    /// Answer every request at once with an error frame
    /// ([`INJECTED_ERROR`](super::INJECTED_ERROR)), no service time.
    pub error: bool,
    /// Accept connections and read requests, never answer them.
    pub stall: bool,
    /// Extra delay added to every answer.
    #[serde(with = "micros")]
    pub delay: Duration,
    /// Service time multiplier (1.0 = normal; 4.0 = four times slower).
    pub slow: f64,
    /// Crash (close everything at once; the process exits with status 3) after this many more
    /// requests.
    pub exit_after: Option<u64>,
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// Simulator configuration; also the builder returned by [`SimAgent::builder`](super::SimAgent::builder).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// RPC listen address (default `127.0.0.1:0`).
    pub listen: RpcAddr,
    /// Admin HTTP listen address (default none).
    pub admin: Option<SocketAddr>,
    /// `(pattern, tag)`: a PreRequest whose URI, a header value or body contains `pattern`
    /// (ASCII case-insensitive) is blocked with 406 and tagged `tag`.
    pub attack_patterns: Vec<(String, String)>,
    /// Fraction of allowed PreRequests that still get a RequestID (default 0).
    pub flag_fraction: f64,
    /// How long an issued RequestID waits for its UpdateRequest (default 10 s).
    pub context_expiration: Duration,
    /// Work per RPC (default fixed 200 µs).
    pub service_time: ServiceTime,
    /// Worker slots (FIFO: RPCs served at once, more wait for a slot) or processors (processor
    /// sharing: every RPC in progress shares them) (default 4).
    pub workers: usize,
    /// How calls use the workers (default [`Shape::Fifo`]).
    pub shape: Shape,
    /// Initial faults.
    pub faults: Faults,
    /// Time from start until the startup probe answers 200 (default 0): the real agent's
    /// startup probe answers 503 until its rules are loaded, while its RPC listener already
    /// serves.
    pub startup_delay: Duration,
    /// Address of the startup probe HTTP listener (`GET /startup`), like the agent's
    /// `SIGSCI_STARTUP_PROBE_LISTENER` (default none; `/startup` is also on the admin server).
    pub startup_probe: Option<SocketAddr>,
    /// Bytes of padding in every PreRequest answer, as the value of one extra request header
    /// ([`PADDING_HEADER`](super::PADDING_HEADER); default 0, none): answers larger than the
    /// socket buffers, for tests of clients that read slowly or not at all.
    pub answer_padding: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: RpcAddr::Tcp("127.0.0.1:0".into()),
            admin: None,
            attack_patterns: default_attack_patterns(),
            flag_fraction: 0.0,
            context_expiration: Duration::from_secs(10),
            service_time: ServiceTime::Fixed(Duration::from_micros(200)),
            workers: 4,
            shape: Shape::Fifo,
            faults: Faults {
                slow: 1.0,
                ..Faults::default()
            },
            startup_delay: Duration::ZERO,
            startup_probe: None,
            answer_padding: 0,
        }
    }
}

/// The patterns a default simulator blocks: `<script` (XSS) and `' OR 1=1` (SQLI).
pub fn default_attack_patterns() -> Vec<(String, String)> {
    vec![
        ("<script".into(), "XSS".into()),
        ("' OR 1=1".into(), "SQLI".into()),
    ]
}

impl AgentConfig {
    /// Sets the RPC listen address.
    pub fn listen(mut self, addr: RpcAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Sets the admin HTTP address.
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }
    /// Sets the fraction of allowed PreRequests that get a RequestID.
    pub fn flag_fraction(mut self, f: f64) -> Self {
        self.flag_fraction = f;
        self
    }
    /// Sets how long a RequestID is remembered.
    pub fn context_expiration(mut self, d: Duration) -> Self {
        self.context_expiration = d;
        self
    }
    /// Sets the service time model.
    pub fn service_time(mut self, s: ServiceTime) -> Self {
        self.service_time = s;
        self
    }
    /// Sets the number of worker slots.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Sets the CPU shape.
    pub fn shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }
    /// Sets the initial faults.
    pub fn faults(mut self, f: Faults) -> Self {
        self.faults = f;
        self
    }
    /// Sets the startup delay (the startup probe answers 503 until it has passed).
    pub fn startup_delay(mut self, d: Duration) -> Self {
        self.startup_delay = d;
        self
    }
    /// Sets the startup probe listen address.
    pub fn startup_probe(mut self, addr: SocketAddr) -> Self {
        self.startup_probe = Some(addr);
        self
    }
    /// Sets the padding bytes added to every PreRequest answer.
    pub fn answer_padding(mut self, bytes: usize) -> Self {
        self.answer_padding = bytes;
        self
    }

    /// Every problem with this configuration, named by its flag.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if !(0.0..=1.0).contains(&self.flag_fraction) {
            errs.push(format!(
                "--flag-fraction {} is not within 0..=1",
                self.flag_fraction
            ));
        }
        if self.workers == 0 {
            errs.push("--workers must be at least 1".into());
        }
        if self.context_expiration.is_zero() {
            errs.push("--context-expiration must be positive".into());
        }
        if !(self.faults.slow.is_finite() && self.faults.slow > 0.0) {
            errs.push(format!(
                "--slow {} must be a positive factor",
                self.faults.slow
            ));
        }
        if self.faults.error && self.faults.stall {
            errs.push("--error and --stall exclude each other".into());
        }
        if self.attack_patterns.iter().any(|(p, _)| p.is_empty()) {
            errs.push("--attack-pattern must not be empty".into());
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}
