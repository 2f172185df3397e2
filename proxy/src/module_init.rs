//! Every agent learns every module.
//!
//! A module sends `RPC.ModuleInit` once, at start, "so that the agent is registered" (the Go
//! module's words). Through the proxy that call reaches one agent; the others would never learn
//! the module. So the module's call is routed like any other (its answer is the first agent's,
//! with the usual retry), and then copied in the background to every other agent that takes
//! work; the distinct modules seen (by `ModuleVersion` and `ServerVersion`, at most
//! [`MAX_MODULES`]) are remembered and replayed to an agent that joins later, within a tick of
//! the snapshot that names it: a joining agent takes work only after `--join-delay` (500 ms by
//! default), so the replay comes first.
//!
//! Each agent gets each ModuleInit once: the memory and the set of agents already given it
//! change under one lock, so an agent gets a new module either as a copy (it was enrolled) or
//! in its replay (it was not), never both; a ModuleInit enrols the agents not enrolled yet
//! (with the modules known before it) before it is copied, so one that arrives before the
//! first tick is not replayed to the agent that answered it. Copies are bounded ([`MAX_PENDING_COPIES`] at a time,
//! each within `--rpc-timeout`); what does not fit is dropped and counted, never waited for.
//! The memory is this process's: a restarted proxy knows no module until modules start again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_pool::{Agent, AgentState, EndpointId, Snapshot};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::Frame;
use crate::metrics as m;

/// Distinct modules remembered for agents that join later.
pub(crate) const MAX_MODULES: usize = 256;
/// The largest ModuleInit copied or remembered: a real one is about 150 bytes, and the bound
/// keeps the memory (256 × 4 KiB) and the copies small whatever a client sends.
pub(crate) const MAX_FRAME_BYTES: usize = 4096;
/// Background copies in flight at once.
pub(crate) const MAX_PENDING_COPIES: usize = 1024;
/// How often the membership is checked for agents to enrol.
const TICK: Duration = Duration::from_millis(100);

/// Copies for the worker to send.
enum Job {
    /// A module's ModuleInit to every other enrolled agent.
    FanOut(Frame, Vec<Arc<Agent>>),
    /// The modules known before an agent was enrolled, to that agent.
    Replay(Arc<Agent>, Vec<Frame>),
}

#[derive(Default)]
struct State {
    /// Distinct modules, by (ModuleVersion, ServerVersion), with the frame that announced each.
    modules: Vec<((String, String), Frame)>,
    /// Agents that were given `modules` (replayed or enrolled with it empty).
    enrolled: HashSet<EndpointId>,
}

/// The memory of modules and the queue of copies.
pub(crate) struct Modules {
    state: Mutex<State>,
    jobs: mpsc::Sender<Job>,
    queue: Mutex<Option<mpsc::Receiver<Job>>>,
    pending: AtomicUsize,
}

impl Default for Modules {
    fn default() -> Self {
        let (jobs, queue) = mpsc::channel(64);
        Self {
            state: Mutex::default(),
            jobs,
            queue: Mutex::new(Some(queue)),
            pending: AtomicUsize::new(0),
        }
    }
}

fn takes_work(agent: &Agent) -> bool {
    matches!(
        agent.state(),
        AgentState::Ready | AgentState::Joining | AgentState::Terminating
    )
}

/// The module's (ModuleVersion, ServerVersion); `None` when unreadable.
fn module_key(frame: &Frame) -> Option<(String, String)> {
    #[derive(Deserialize)]
    #[allow(non_snake_case)]
    struct Init {
        #[serde(default)]
        ModuleVersion: String,
        #[serde(default)]
        ServerVersion: String,
    }
    type Call = (IgnoredAny, IgnoredAny, IgnoredAny, (Init,));
    let (_, _, _, (init,)) = rmp_serde::from_slice::<Call>(frame.as_bytes()).ok()?;
    Some((init.ModuleVersion, init.ServerVersion))
}

impl State {
    /// Enrols the agents of `snapshot` that take work and are not enrolled yet; returns each
    /// with the modules to replay to it. Forgets agents no longer in the snapshot.
    fn enrol(&mut self, snapshot: &Snapshot) -> Vec<(Arc<Agent>, Vec<Frame>)> {
        self.enrolled
            .retain(|id| snapshot.agents().iter().any(|a| a.id() == id));
        let mut new = Vec::new();
        for a in snapshot.agents().iter().filter(|a| takes_work(a)) {
            if self.enrolled.insert(a.id().clone()) {
                let frames = self.modules.iter().map(|(_, f)| f.clone()).collect();
                new.push((a.clone(), frames));
            }
        }
        new
    }
}

impl Modules {
    /// A module's ModuleInit was answered by `answered` (or by no agent): enrol the agents not
    /// enrolled yet (with the modules known before this one), remember the module, and copy the
    /// call to every other agent that takes work.
    pub(crate) fn announced(&self, frame: &Frame, snapshot: &Snapshot, answered: Option<&Agent>) {
        if frame.as_bytes().len() > MAX_FRAME_BYTES {
            m::module_unremembered();
            return;
        }
        let (replays, targets) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let replays = state.enrol(snapshot);
            match module_key(frame) {
                Some(key) if state.modules.iter().any(|(k, _)| *k == key) => {}
                Some(key) if state.modules.len() < MAX_MODULES => {
                    state.modules.push((key, frame.clone()));
                    m::modules_known(state.modules.len());
                }
                _ => m::module_unremembered(),
            }
            let targets: Vec<_> = snapshot
                .agents()
                .iter()
                .filter(|a| answered.is_none_or(|x| !std::ptr::eq(Arc::as_ptr(a), x)))
                .filter(|a| takes_work(a) && state.enrolled.contains(a.id()))
                .cloned()
                .collect();
            (replays, targets)
        };
        for (agent, frames) in replays.into_iter().filter(|(_, f)| !f.is_empty()) {
            self.queue(Job::Replay(agent, frames));
        }
        if !targets.is_empty() {
            self.queue(Job::FanOut(frame.clone(), targets));
        }
    }

    /// Hands a job to the worker; counts it dropped when 64 are already queued.
    fn queue(&self, job: Job) {
        let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            self.jobs.try_send(job)
        else {
            return;
        };
        match job {
            Job::FanOut(_, targets) => {
                m::module_init_copied("fan_out", "dropped", targets.len() as u64)
            }
            Job::Replay(agent, frames) => {
                m::module_init_copied("replay", "dropped", frames.len() as u64);
                self.unenrol(&agent);
            }
        }
    }

    /// Enrols the new agents of `snapshot` (see [`State::enrol`]).
    fn enrol(&self, snapshot: &Snapshot) -> Vec<(Arc<Agent>, Vec<Frame>)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.enrol(snapshot)
    }

    /// An agent whose replay failed is enrolled again at a later tick.
    fn unenrol(&self, agent: &Agent) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.enrolled.remove(agent.id());
    }

    /// Reserves `n` copies within [`MAX_PENDING_COPIES`].
    fn reserve(&self, n: usize) -> bool {
        self.pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                (p + n <= MAX_PENDING_COPIES).then_some(p + n)
            })
            .is_ok()
    }
}

/// What the copies need from the router that feeds this module: its memory of modules, the
/// membership, and one call to one agent. A trait, so that this module sits below the router
/// (which holds the [`Modules`]) and imports nothing above it.
pub(crate) trait Copier: Send + Sync + 'static {
    /// The memory of modules and the queue of copies.
    fn modules(&self) -> &Modules;
    /// The membership now.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// One copy of `frame` to `agent`: whether the agent answered without error.
    fn copy(&self, agent: &Arc<Agent>, frame: &Frame) -> impl Future<Output = bool> + Send;
}

/// Sends the copies and the replays until `exit`.
pub(crate) async fn run<C: Copier>(copier: Arc<C>, exit: CancellationToken) {
    let modules = copier.modules();
    let Some(mut queue) = modules
        .queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let mut every = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = exit.cancelled() => break,
            Some(job) = queue.recv() => match job {
                Job::FanOut(frame, targets) => fan_out(&copier, frame, targets),
                Job::Replay(agent, frames) => replay(&copier, agent, frames),
            },
            _ = every.tick() => {
                for (agent, frames) in modules.enrol(&copier.snapshot()) {
                    replay(&copier, agent, frames);
                }
            }
        }
    }
}

/// Copies a job's frame to each of its targets, each in a task of its own.
fn fan_out<C: Copier>(copier: &Arc<C>, frame: Frame, targets: Vec<Arc<Agent>>) {
    for agent in targets {
        if !copier.modules().reserve(1) {
            m::module_init_copied("fan_out", "dropped", 1);
            continue;
        }
        let (copier, frame) = (copier.clone(), frame.clone());
        tokio::spawn(
            async move {
                let ok = copier.copy(&agent, &frame).await;
                copier.modules().pending.fetch_sub(1, Ordering::Relaxed);
                m::module_init_copied("fan_out", if ok { "ok" } else { "error" }, 1);
            }
            .in_current_span(),
        );
    }
}

/// Gives a newly enrolled agent every remembered module, one after the other.
fn replay<C: Copier>(copier: &Arc<C>, agent: Arc<Agent>, frames: Vec<Frame>) {
    let n = frames.len();
    if n == 0 {
        return;
    }
    if !copier.modules().reserve(n) {
        m::module_init_copied("replay", "dropped", n as u64);
        copier.modules().unenrol(&agent);
        return;
    }
    let copier = copier.clone();
    tokio::spawn(
        async move {
            let mut failed = false;
            for frame in &frames {
                let ok = !failed && copier.copy(&agent, frame).await;
                failed |= !ok;
                m::module_init_copied("replay", if ok { "ok" } else { "error" }, 1);
            }
            let modules = copier.modules();
            modules.pending.fetch_sub(n, Ordering::Relaxed);
            if failed {
                modules.unenrol(&agent);
            }
        }
        .in_current_span(),
    );
}
