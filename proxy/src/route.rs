//! Per-RPC routing: which agent gets a request, the RequestID affinity rewrite both ways, one
//! retry on another agent within a budget, and the answer the module gets back (always one
//! frame with its own msgid: the agent's answer, or an error frame at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use agent_pool::{Agent, Outcome, Pool};
use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use crate::affinity;
use crate::codec::{Frame, Method, error_response};
use crate::error::{RetryType, UpstreamError};
use crate::in_flight::InFlightCount;
use crate::metrics as m;
use crate::upstream::Upstreams;

/// Retries allowed as a share of successful first attempts: a token bucket in thousandths of a
/// retry. A success deposits `ratio × 1000`, a retry costs 1000; the balance starts with ten
/// retries so an idle proxy can still retry, and is capped at a hundred so a long quiet
/// period cannot fund a retry storm.
pub(crate) struct RetryBudget {
    balance: AtomicI64,
    deposit: i64,
}

impl RetryBudget {
    const COST: i64 = 1000;
    const START: i64 = 10 * Self::COST;
    const CAP: i64 = 100 * Self::COST;

    pub(crate) fn new(ratio: f64) -> Self {
        Self {
            balance: AtomicI64::new(Self::START),
            deposit: (ratio * 1000.0).round() as i64,
        }
    }

    fn deposit(&self) {
        if self.deposit > 0 && self.balance.load(Ordering::Relaxed) < Self::CAP {
            self.balance.fetch_add(self.deposit, Ordering::Relaxed);
        }
    }

    fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= Self::COST).then_some(b - Self::COST)
            })
            .is_ok()
    }
}

/// Routes module RPCs to agents.
pub(crate) struct Router {
    pub(crate) pool: Pool,
    pub(crate) upstreams: Upstreams,
    pub(crate) budget: RetryBudget,
    pub(crate) rpc_timeout: Duration,
    pub(crate) in_flight: Arc<InFlightCount>,
    /// Proxy-wide RPCs in flight before new ones are shed.
    pub(crate) max_in_flight: usize,
    /// Proxy-wide request bytes in flight before new ones are shed.
    pub(crate) max_in_flight_bytes: usize,
}

impl Router {
    /// Handles one request frame; returns the one frame to write back.
    pub(crate) async fn request(&self, frame: Frame) -> Bytes {
        let started = Instant::now();
        let deadline = started + self.rpc_timeout;
        let msgid = frame.msgid().unwrap_or_default();
        let method = frame.method().unwrap_or(Method::Other);
        let Some(_counted) = self.in_flight.try_enter(
            frame.as_bytes().len(),
            self.max_in_flight,
            self.max_in_flight_bytes,
        ) else {
            // Agents already have more than they can answer in time: fail this one fast.
            m::rpc_finished(method, "in_flight_limit", started.elapsed());
            m::uninspected(m::Uninspected::InFlightLimit);
            return error_response(msgid, "sigsci-proxy: too many calls in flight");
        };
        let snapshot = self.pool.snapshot();

        // Target, RequestID to restore, and whether a failed first attempt may go elsewhere.
        let mut restore: Option<&[u8]> = None;
        let target = match method {
            Method::UpdateRequest => match frame.request_id().and_then(affinity::decode) {
                Some((original, token)) => {
                    restore = Some(original);
                    match snapshot.by_token(token) {
                        Some(agent) => {
                            m::affinity("hit");
                            Some(agent)
                        }
                        None => {
                            // Never dial what a client wrote: balance it instead.
                            m::affinity("lost");
                            snapshot.pick()
                        }
                    }
                }
                None => {
                    m::affinity("none");
                    snapshot.pick()
                }
            },
            _ => snapshot.pick(),
        };
        // A second inspection costs little; a missed one lets a request through unseen.
        let repeatable = matches!(method, Method::PreRequest | Method::ModuleInit);
        // An UpdateRequest routed by token has exactly one right agent.
        let pinned = method == Method::UpdateRequest && restore.is_some();

        let Some(agent) = target else {
            let e = UpstreamError::NoAgent;
            m::rpc_finished(method, e.label(), started.elapsed());
            m::uninspected(e.uninspected());
            return error_response(msgid, &format!("sigsci-proxy: {e}"));
        };
        let mut result = self.attempt(&agent, &frame, restore, deadline).await;
        let mut answered_by = agent;
        if let Err(e) = &result {
            let allowed = match e.retry() {
                RetryType::Safe => !pinned,
                RetryType::IfRepeatable => repeatable && !pinned,
                RetryType::Never => false,
            };
            if allowed && Instant::now() < deadline {
                match snapshot.pick_excluding(&answered_by) {
                    None => m::retry("no_other_agent"),
                    Some(_) if !self.budget.withdraw() => m::retry("budget_exhausted"),
                    Some(other) => {
                        m::retry("attempted");
                        debug!(error = %e, agent.addr = %other.address(), "Retrying on another agent");
                        let second = self.attempt(&other, &frame, restore, deadline).await;
                        // An agent's error answer beats a failure of the second attempt: the
                        // module learns what the agent said.
                        let keep_first = matches!(
                            (&result, &second),
                            (Err(UpstreamError::AgentError(_)), Err(e2)) if !matches!(e2, UpstreamError::AgentError(_))
                        );
                        if !keep_first {
                            result = second;
                            answered_by = other;
                        }
                    }
                }
            }
        } else {
            self.budget.deposit();
        }

        match result {
            Ok(response) => {
                m::rpc_finished(method, "ok", started.elapsed());
                respond(&response, msgid, &answered_by)
            }
            Err(e) => {
                m::rpc_finished(method, e.label(), started.elapsed());
                m::uninspected(e.uninspected());
                debug!(error = %e, side = ?e.side(), agent.addr = %answered_by.address(), "RPC failed");
                match e {
                    UpstreamError::AgentError(answer) => respond(&answer, msgid, &answered_by),
                    e => error_response(msgid, &format!("sigsci-proxy: {e}")),
                }
            }
        }
    }

    /// One try on one agent. An error answer is a failure here: the module that gets it lets
    /// its request through uninspected.
    async fn attempt(
        &self,
        agent: &Arc<Agent>,
        frame: &Frame,
        restore: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Frame, UpstreamError> {
        let in_flight = agent.start();
        let result = match self.upstreams.call(agent, frame, restore, deadline).await {
            Ok(answer) if answer.is_error_response() => {
                Err(UpstreamError::AgentError(Box::new(answer)))
            }
            other => other,
        };
        in_flight.finish(match &result {
            Ok(_) => Outcome::Success,
            Err(e) => e.outcome(),
        });
        result
    }
}

/// The agent's answer with the module's msgid, and a non-empty RequestID tagged with the
/// answering agent's token.
fn respond(response: &Frame, msgid: u64, agent: &Agent) -> Bytes {
    let tagged = response
        .request_id()
        .filter(|id| !id.is_empty())
        .map(|id| affinity::encode(id, agent.token()));
    match response.rewrite(Some(msgid), tagged.as_deref()) {
        Ok(frame) => frame.into_bytes(),
        Err(e) => {
            debug!(error = %e, "Agent answer could not be rewritten");
            error_response(msgid, "sigsci-proxy: invalid answer from agent")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget_is_a_share_of_successes() {
        let budget = RetryBudget::new(0.2);
        let mut retries = 0;
        while budget.withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 10, "starts with ten retries");
        for _ in 0..50 {
            budget.deposit();
        }
        let mut retries = 0;
        while budget.withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 10, "50 successes at 20% fund 10 retries");
        let none = RetryBudget::new(0.0);
        for _ in 0..100 {
            none.deposit();
        }
        assert_eq!((0..20).filter(|_| none.withdraw()).count(), 10);
    }
}
