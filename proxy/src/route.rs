//! Per-RPC routing: which agent gets a request, the RequestID affinity rewrite both ways, one
//! retry on another agent within the retry budget (`retry_budget.rs`), and the answer the
//! module gets back (always one frame with its own msgid: the agent's answer, an error frame at
//! once, or, for an UpdateRequest whose token names no agent, the answer an agent gives).

use std::sync::Arc;
use std::time::Duration;

use agent_pool::{Agent, Outcome, Pool, Snapshot};
use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use crate::affinity::{self, Tag};
use crate::codec::{Frame, Method, error_response, update_response};
use crate::error::{RetryType, UpstreamError};
use crate::in_flight::InFlightCount;
use crate::metrics as m;
use crate::module_init::{Copier, Modules};
use crate::overload::{Flow, OverloadQueue, Refused, Slot};
use crate::retry_budget::RetryBudget;
use crate::upstream::Upstreams;

/// Routes module RPCs to agents.
pub(crate) struct Router {
    pub(crate) pool: Pool,
    pub(crate) upstreams: Upstreams,
    pub(crate) retry_budget: RetryBudget,
    pub(crate) rpc_timeout: Duration,
    pub(crate) in_flight: Arc<InFlightCount>,
    /// Proxy-wide RPCs in flight before new ones are shed.
    pub(crate) max_in_flight: usize,
    /// Proxy-wide request bytes in flight before new ones are shed.
    pub(crate) max_in_flight_bytes: usize,
    /// The modules seen, copied to every agent ([`crate::module_init`]).
    pub(crate) modules: Modules,
    /// Where calls wait when every agent is at its concurrency limit ([`crate::overload`]).
    pub(crate) overload: Arc<OverloadQueue>,
}

/// ModuleInit fan-out sends its copies through the router, each counted in the agent's load but
/// started whatever its limit (every agent must have them; they are rare), bounded by the RPC
/// timeout.
impl Copier for Router {
    fn modules(&self) -> &Modules {
        &self.modules
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.pool.snapshot()
    }

    async fn copy(&self, agent: &Arc<Agent>, frame: &Frame) -> bool {
        let deadline = Instant::now() + self.rpc_timeout;
        let slot = self.overload.start_on(agent);
        self.attempt(slot, frame, None, deadline).await.is_ok()
    }
}

/// Where a call goes.
enum Target<'f> {
    /// To the picker's choice among the agents below their limit (waiting for one if none is).
    Balanced,
    /// An UpdateRequest to the agent its token names, with the original RequestID: only that
    /// agent knows the ID, so a failure is never retried elsewhere.
    Pinned(Arc<Agent>, &'f [u8]),
    /// An UpdateRequest whose token names no member: no agent knows its ID, so the proxy
    /// answers it as an agent would and sends it nowhere.
    Lost,
}

impl Router {
    /// Handles one request frame of `flow` (the module's source); returns the one frame to
    /// write back.
    pub(crate) async fn request(&self, frame: Frame, flow: &Flow) -> Bytes {
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
            m::rpc_finished(method, m::RpcOutcome::InFlightLimit, started.elapsed());
            m::uninspected(m::Uninspected::InFlightLimit);
            return error_response(msgid, "sigsci-proxy: too many calls in flight");
        };
        if matches!(method, Method::UpdateRequest | Method::PostRequest) {
            self.pool.count_follow_up();
        }
        let snapshot = self.pool.snapshot();
        let (slot, restore) = match target(method, &frame, &snapshot) {
            Target::Balanced => (
                self.overload.balanced(&snapshot, flow, deadline).await,
                None,
            ),
            Target::Pinned(agent, original) => {
                (self.overload.pinned(&agent, deadline).await, Some(original))
            }
            Target::Lost => {
                m::rpc_finished(method, m::RpcOutcome::Lost, started.elapsed());
                return update_response(msgid);
            }
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(refused) => return self.refused(refused, method, &frame, &snapshot, started),
        };
        let (result, answered_by) = self
            .attempt_or_retry(&snapshot, method, slot, &frame, restore, deadline)
            .await;
        if method == Method::ModuleInit {
            let answered = result.as_ref().ok().map(|_| &*answered_by);
            self.modules.announced(&frame, &snapshot, answered);
        }
        match result {
            Ok(response) => {
                if method == Method::PreRequest {
                    self.pool.count_pre_answered();
                }
                m::rpc_finished(method, m::RpcOutcome::Ok, started.elapsed());
                respond(&response, msgid, &answered_by, &snapshot)
            }
            Err(e) => {
                m::rpc_finished(method, e.rpc_outcome(), started.elapsed());
                m::uninspected(e.uninspected());
                debug!(error = %e, side = ?e.side(), agent.addr = %answered_by.address(), "RPC failed");
                match e {
                    UpstreamError::AgentError(answer) => {
                        respond(&answer, msgid, &answered_by, &snapshot)
                    }
                    e => error_response(msgid, &format!("sigsci-proxy: {e}")),
                }
            }
        }
    }

    /// The answer to a call that got no agent: none takes work, or the overload queue shed it.
    fn refused(
        &self,
        refused: Refused,
        method: Method,
        frame: &Frame,
        snapshot: &Snapshot,
        started: Instant,
    ) -> Bytes {
        if method == Method::ModuleInit {
            self.modules.announced(frame, snapshot, None);
        }
        let msgid = frame.msgid().unwrap_or_default();
        match refused {
            Refused::NoAgent => {
                let e = UpstreamError::NoAgent;
                m::rpc_finished(method, e.rpc_outcome(), started.elapsed());
                m::uninspected(e.uninspected());
                error_response(msgid, &format!("sigsci-proxy: {e}"))
            }
            Refused::Shed(cause) => {
                m::queue_shed(cause);
                m::rpc_finished(method, m::RpcOutcome::Shed, started.elapsed());
                m::uninspected(m::Uninspected::Shed);
                self.pool.count_shed(method == Method::PreRequest);
                error_response(msgid, "sigsci-proxy: overloaded: every agent at its limit")
            }
        }
    }

    /// A first attempt on the slot's agent and, if it failed in a way that allows it, one retry
    /// on another agent below its limit, within the retry budget. Returns the result kept and the
    /// agent that gave it.
    async fn attempt_or_retry(
        &self,
        snapshot: &Snapshot,
        method: Method,
        slot: Slot,
        frame: &Frame,
        restore: Option<&[u8]>,
        deadline: Instant,
    ) -> (Result<Frame, UpstreamError>, Arc<Agent>) {
        let agent = slot.agent().clone();
        let result = self.attempt(slot, frame, restore, deadline).await;
        let Err(e) = &result else {
            self.retry_budget.deposit();
            return (result, agent);
        };
        // A second inspection costs little; a missed one lets a request through unseen.
        let repeatable = matches!(method, Method::PreRequest | Method::ModuleInit);
        // An UpdateRequest routed by token has exactly one right agent.
        let pinned = restore.is_some();
        let allowed = match e.retry() {
            RetryType::Safe => !pinned,
            RetryType::IfRepeatable => repeatable && !pinned,
            RetryType::Never => false,
        };
        if !allowed || Instant::now() >= deadline {
            return (result, agent);
        }
        let other = match snapshot.pick_free(Some(&agent)) {
            None => {
                m::retry(m::Retry::NoOtherAgent);
                return (result, agent);
            }
            Some(_) if !self.retry_budget.withdraw() => {
                m::retry(m::Retry::BudgetExhausted);
                return (result, agent);
            }
            Some(other) => other,
        };
        m::retry(m::Retry::Attempted);
        debug!(error = %e, agent.addr = %other.address(), "Retrying on another agent");
        let second = self
            .attempt(self.overload.start_on(&other), frame, restore, deadline)
            .await;
        // An agent's error answer beats a failure of the second attempt: the module learns
        // what the agent said.
        let keep_first = matches!(
            (&result, &second),
            (Err(UpstreamError::AgentError(_)), Err(e2)) if !matches!(e2, UpstreamError::AgentError(_))
        );
        if keep_first {
            (result, agent)
        } else {
            (second, other)
        }
    }

    /// One try on the slot's agent. An error answer is a failure here: the module that gets it
    /// lets its request through uninspected.
    pub(crate) async fn attempt(
        &self,
        slot: Slot,
        frame: &Frame,
        restore: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Frame, UpstreamError> {
        let agent = slot.agent().clone();
        let result = match self.upstreams.call(&agent, frame, restore, deadline).await {
            Ok(answer) if answer.is_error_response() => {
                Err(UpstreamError::AgentError(Box::new(answer)))
            }
            other => other,
        };
        slot.finish(match &result {
            Ok(_) => Outcome::Success,
            Err(e) => e.outcome(),
        });
        result
    }
}

/// Where a call goes: an UpdateRequest by the token in its RequestID, everything else (and an
/// UpdateRequest without a token) by the picker.
fn target<'f>(method: Method, frame: &'f Frame, snapshot: &Snapshot) -> Target<'f> {
    if method != Method::UpdateRequest {
        return Target::Balanced;
    }
    let Some((original, tag)) = frame.request_id().and_then(affinity::decode) else {
        m::affinity(m::Affinity::None);
        return Target::Balanced;
    };
    let named = match tag {
        Tag::Full(token) => snapshot.by_token(token),
        Tag::Short(short) => snapshot.by_short_token(short),
    };
    match named {
        Some(agent) => {
            m::affinity(m::Affinity::Hit);
            Target::Pinned(agent, original)
        }
        None => {
            // Never dial what a client wrote, and never hand the ID to an agent that cannot
            // know it.
            m::affinity(m::Affinity::Lost);
            Target::Lost
        }
    }
}

/// The agent's answer with the module's msgid, and a non-empty RequestID tagged with the
/// answering agent's token within the string header class the agent used (untagged when no
/// suffix fits: its UpdateRequest is then balanced).
fn respond(response: &Frame, msgid: u64, agent: &Agent, snapshot: &Snapshot) -> Bytes {
    let tagged = response
        .request_id()
        .filter(|id| !id.is_empty())
        .and_then(|id| {
            let capacity = response.request_id_capacity().unwrap_or(usize::MAX);
            let short_owned = snapshot.owns_short_token(agent);
            affinity::encode(id, agent.token(), capacity, short_owned)
        });
    match response.rewrite(Some(msgid), tagged.as_deref()) {
        Ok(frame) => frame.into_bytes(),
        Err(e) => {
            debug!(error = %e, "Agent answer could not be rewritten");
            error_response(msgid, "sigsci-proxy: invalid answer from agent")
        }
    }
}
