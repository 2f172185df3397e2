//! Validation: every problem of a configuration at once, each naming its option, so a bad
//! deployment fails at start-up (exit 2) with the whole list.

use std::fmt;
use std::time::Duration;

use agent_pool::HostPort;
use agent_pool::source::kubernetes::ServiceRef;

use super::Config;

/// One problem found in the configuration, naming the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The option's flag name, without dashes (`rpc-timeout`).
    pub option: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{}: {}", self.option, self.message)
    }
}

impl Config {
    /// Checks the configuration, returning every problem found.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad =
            |option: &'static str, message: String| problems.push(Problem { option, message });
        self.check_each_value(&mut bad);
        self.check_pairs(&mut bad);
        self.check_membership(&mut bad);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Each value on its own: counts, periods, sizes, ratios.
    fn check_each_value(&self, bad: &mut impl FnMut(&'static str, String)) {
        if self.listen.is_empty() {
            bad("listen", "at least one address is needed".into());
        }
        let counts = [
            ("backlog", self.backlog as usize),
            ("max-connections", self.max_connections),
            (
                "max-in-flight-per-connection",
                self.max_in_flight_per_connection,
            ),
            ("upstream-connections", self.upstream_connections),
            ("max-in-flight", self.max_in_flight),
            ("eject-after", self.eject_after as usize),
        ];
        for (option, n) in counts {
            if n == 0 {
                bad(option, "must be at least 1".into());
            }
        }
        let periods = [
            ("connect-timeout", self.connect_timeout),
            ("rpc-timeout", self.rpc_timeout),
            ("idle-timeout", self.idle_timeout),
            ("write-timeout", self.write_timeout),
            ("frame-read-timeout", self.frame_read_timeout),
            ("latency-decay", self.latency_decay),
            ("agents-file-poll", self.agents_file_poll),
            ("agents-dns-interval", self.agents_dns_interval),
            ("hints-tick", self.hints_tick),
        ];
        for (option, d) in periods {
            if d.is_zero() {
                bad(option, "must be more than 0".into());
            }
        }
        if self.max_frame_bytes < 64 {
            bad(
                "max-frame-bytes",
                format!("{} is too small (at least 64)", self.max_frame_bytes),
            );
        }
        if !(0.0..=1.0).contains(&self.retry_budget) {
            bad(
                "retry-budget",
                format!("{} is not a ratio between 0 and 1", self.retry_budget),
            );
        }
        if self.hints_target_outstanding.is_nan() || self.hints_target_outstanding <= 0.0 {
            bad(
                "hints-target-outstanding",
                format!("{} must be more than 0", self.hints_target_outstanding),
            );
        }
        if self.hints_target_rpc.is_nan() || self.hints_target_rpc < 0.0 {
            bad(
                "hints-target-rpc",
                format!("{} must be 0 (off) or more", self.hints_target_rpc),
            );
        }
    }

    /// Values that bound each other.
    fn check_pairs(&self, bad: &mut impl FnMut(&'static str, String)) {
        if !self.rpc_timeout.is_zero() && self.connect_timeout > self.rpc_timeout {
            bad(
                "connect-timeout",
                format!(
                    "{:?} is longer than --rpc-timeout {:?}, which bounds the whole call",
                    self.connect_timeout, self.rpc_timeout
                ),
            );
        }
        if self.rpc_timeout > self.frame_read_timeout {
            bad(
                "rpc-timeout",
                format!(
                    "{:?} is longer than --frame-read-timeout {:?}: a module pipelining calls \
                     would be closed as a slow sender while the proxy waited on an agent",
                    self.rpc_timeout, self.frame_read_timeout
                ),
            );
        }
        if self.rpc_timeout > Duration::from_secs(60) {
            bad(
                "rpc-timeout",
                format!("{:?} is longer than a minute", self.rpc_timeout),
            );
        }
        if self.max_partial_bytes < self.max_frame_bytes {
            bad(
                "max-partial-bytes",
                format!(
                    "{} is less than --max-frame-bytes ({}): one large request could never arrive",
                    self.max_partial_bytes, self.max_frame_bytes
                ),
            );
        }
        if self.max_in_flight_bytes < self.max_frame_bytes {
            bad(
                "max-in-flight-bytes",
                format!(
                    "{} is less than --max-frame-bytes ({})",
                    self.max_in_flight_bytes, self.max_frame_bytes
                ),
            );
        }
        if self.hints_min_agents > self.hints_max_agents {
            bad(
                "hints-min-agents",
                format!(
                    "{} is above --hints-max-agents {}",
                    self.hints_min_agents, self.hints_max_agents
                ),
            );
        }
        if self.drain_delay >= self.drain_timeout {
            bad(
                "drain-delay",
                format!(
                    "{:?} must be shorter than --drain-timeout {:?}",
                    self.drain_delay, self.drain_timeout
                ),
            );
        }
    }

    /// Exactly one membership source, and its addresses.
    fn check_membership(&self, bad: &mut impl FnMut(&'static str, String)) {
        let sources = [
            !self.agents.is_empty(),
            self.agents_file.is_some(),
            self.agents_dns.is_some(),
            self.agents_k8s.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => bad(
                "agents",
                "no agents: give one of --agents, --agents-file, --agents-dns, --agents-k8s".into(),
            ),
            1 => {}
            _ => bad(
                "agents",
                "give only one of --agents, --agents-file, --agents-dns, --agents-k8s".into(),
            ),
        }
        for a in &self.agents {
            if let Some(path) = a.strip_prefix("unix:") {
                if path.is_empty() {
                    bad("agents", format!("`{a}`: a Unix socket needs a path"));
                }
            } else if let Err(e) = a.parse::<HostPort>() {
                bad("agents", format!("`{a}`: {}", e.why));
            }
        }
        if let Some(dns) = &self.agents_dns
            && let Err(e) = dns.parse::<HostPort>()
        {
            bad("agents-dns", format!("`{dns}`: {}", e.why));
        }
        if let Some(k8s) = &self.agents_k8s
            && let Err(e) = k8s.parse::<ServiceRef>()
        {
            bad("agents-k8s", e.to_string());
        }
    }
}
