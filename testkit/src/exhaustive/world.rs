//! One explored world: the simulator in stepwise mode, the workload's progress and the
//! budgets spent, with the steps possible next and a fingerprint of where it stands.

use std::time::{Duration, Instant};

use super::step::Step;
use super::{FaultKind, Model};
use crate::sim::{
    Action, Direction, Fault, Fingerprint, Notice, Restore, Sim, SimStats, Violation,
};

/// Why a step could not be taken.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StepError {
    /// The step is not possible in this state (a trace that does not fit the model).
    NotEnabled,
    /// The step broke an invariant.
    Violation(Violation),
}

pub(crate) struct World<'m> {
    model: &'m Model,
    pub(crate) sim: Sim,
    next_action: usize,
    faults: usize,
    persists: usize,
}

impl<'m> World<'m> {
    /// The world before its first step (the clients have asked for their sockets).
    pub(crate) fn new(model: &'m Model, origin: Instant, trace: usize) -> Result<Self, Violation> {
        let mut config = model.config.clone();
        config.record_events = false;
        config.trace = trace;
        let mut sim = Sim::new(origin, config);
        sim.enter_stepwise();
        for c in &model.clients {
            sim.add_client_with(c.clone());
        }
        sim.end_step()?;
        Ok(Self {
            model,
            sim,
            next_action: 0,
            faults: 0,
            persists: 0,
        })
    }

    /// Identifies the state: equal keys, equal futures (up to a hash collision).
    pub(crate) fn key(&self) -> u128 {
        let mut f = Fingerprint::default();
        self.sim.fingerprint(&mut f);
        f.debug(&(self.next_action, self.faults, self.persists));
        f.value()
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    fn allows(&self, kind: FaultKind) -> bool {
        self.faults < self.model.faults && self.model.fault_kinds.contains(&kind)
    }

    /// The steps possible now: first those that are not faults (deliveries, notices, the
    /// workload, timers, persisting), then the faults the budget still allows. A state with
    /// no step of the first kind is at the end of its path.
    pub(crate) fn steps(&self) -> (Vec<Step>, Vec<Step>) {
        let sim = &self.sim;
        let mut free = Vec::new();
        let mut faults = Vec::new();
        for (link, to_server) in sim.waiting_frames() {
            free.push(Step::Deliver { link, to_server });
        }
        let mut notices = sim.notices();
        notices.dedup();
        let mut seen = Vec::new();
        for n in notices {
            if seen.contains(&n) {
                continue;
            }
            free.push(match &n {
                Notice::Connect(link) => Step::Connect { link: *link },
                Notice::ClientClose(link) => Step::ClientHearsClose { link: *link },
                Notice::ServerClose(link) => Step::ServerHearsClose { link: *link },
                Notice::Respond(request) => Step::Respond {
                    request: request.clone(),
                },
                Notice::Restore(instance) => Step::Restore {
                    instance: *instance,
                },
            });
            seen.push(n);
        }
        if let Some(action) = self.model.workload.get(self.next_action) {
            if self.action_possible(action) {
                free.push(Step::Act(action.clone()));
            }
        }
        let timers = sim.timers();
        if let Some(earliest) = timers.iter().map(|t| t.1).min() {
            if earliest <= self.model.horizon {
                let late = earliest > sim.now && sim.in_flight();
                for (target, _) in timers.iter().filter(|t| t.1 == earliest) {
                    let step = Step::Timer {
                        target: *target,
                        late,
                    };
                    if !late {
                        free.push(step);
                    } else if self.allows(FaultKind::LateTimer) {
                        faults.push(step);
                    }
                }
            }
        }
        if self.persists < self.model.persists && sim.server().is_some() {
            free.push(Step::Persist);
        }
        self.fault_steps(&mut faults);
        (free, faults)
    }

    fn action_possible(&self, action: &Action) -> bool {
        let server_up = self.sim.server().is_some();
        match action {
            Action::Publish { client, .. } => {
                server_up
                    && self
                        .sim
                        .app_sessions
                        .get(*client)
                        .is_some_and(Option::is_some)
            }
            Action::Broadcast { .. } => server_up,
            Action::Send { client } | Action::Disconnect { client } => {
                *client < self.sim.clients.len()
            }
        }
    }

    fn fault_steps(&self, out: &mut Vec<Step>) {
        let sim = &self.sim;
        for (c, sc) in sim.clients.iter().enumerate() {
            let link = sc
                .link
                .and_then(|l| sim.links.get(&l).map(|link| (l, link)));
            if let Some((_, l)) = link.filter(|(_, l)| !l.cut) {
                if self.allows(FaultKind::Cut) {
                    out.push(Step::Fault(Fault::Cut { client: c }));
                }
                for direction in [Direction::ToServer, Direction::ToClient, Direction::Both] {
                    let new =
                        (direction.up() && !l.up.silent) || (direction.down() && !l.down.silent);
                    if new && self.allows(FaultKind::HalfOpen(direction)) {
                        out.push(Step::Fault(Fault::HalfOpen {
                            client: c,
                            direction,
                        }));
                    }
                }
            }
            if !sc.disconnected_by_app && self.allows(FaultKind::RestartClient) {
                out.push(Step::Fault(Fault::RestartClient { client: c }));
            }
        }
        for link in sim.links.keys().copied() {
            if sim.text_waiting_down(link) {
                if self.allows(FaultKind::DropFrame) {
                    out.push(Step::DropFrame { link });
                }
                if self.allows(FaultKind::DuplicateFrame) {
                    out.push(Step::DuplicateFrame { link });
                }
            }
        }
        if sim.server().is_some() {
            for restore in [Restore::Latest, Restore::Persisted, Restore::Empty] {
                // Without a persisted snapshot, `Persisted` is `Empty`.
                if restore == Restore::Persisted && sim.persisted.is_none() {
                    continue;
                }
                for (graceful, kind) in [
                    (false, FaultKind::Crash(restore)),
                    (true, FaultKind::Shutdown(restore)),
                ] {
                    if self.allows(kind) {
                        out.push(Step::Fault(Fault::Crash {
                            restore,
                            downtime: Duration::ZERO,
                            graceful,
                        }));
                    }
                }
            }
        }
    }

    /// Takes one step (which must be possible now) and checks every invariant.
    pub(crate) fn apply(&mut self, step: &Step) -> Result<(), StepError> {
        if *step == Step::Settle {
            return self.settle().map_err(StepError::Violation);
        }
        let (free, faults) = self.steps();
        if !free.contains(step) && !faults.contains(step) {
            return Err(StepError::NotEnabled);
        }
        self.apply_unchecked(step);
        self.sim.end_step().map_err(StepError::Violation)
    }

    /// [`World::apply`] for a step taken from [`World::steps`].
    pub(crate) fn apply_unchecked(&mut self, step: &Step) {
        if step.is_fault() {
            self.faults += 1;
        }
        let sim = &mut self.sim;
        if sim.config.trace > 0 {
            sim.trace_line(format!("STEP {step}"));
        }
        match step {
            Step::Act(action) => {
                self.next_action += 1;
                sim.act(action.clone());
            }
            Step::Connect { link } => {
                sim.take_notice(&Notice::Connect(*link));
            }
            Step::Deliver { link, to_server } => {
                sim.deliver_head(*link, *to_server);
            }
            Step::ClientHearsClose { link } => {
                sim.take_notice(&Notice::ClientClose(*link));
            }
            Step::ServerHearsClose { link } => {
                sim.take_notice(&Notice::ServerClose(*link));
            }
            Step::Respond { request } => {
                sim.take_notice(&Notice::Respond(request.clone()));
            }
            Step::Restore { instance } => {
                sim.take_notice(&Notice::Restore(*instance));
            }
            Step::Timer { target, .. } => {
                let at = sim.timers().iter().map(|t| t.1).min();
                if let Some(at) = at {
                    sim.fire_timer(*target, at);
                }
            }
            Step::Persist => {
                self.persists += 1;
                sim.inject(Fault::Persist);
            }
            Step::Fault(fault) => sim.inject(fault.clone()),
            Step::DropFrame { link } => {
                sim.drop_head(*link);
            }
            Step::DuplicateFrame { link } => {
                sim.duplicate_head(*link);
            }
            Step::Settle => {}
        }
    }

    /// Faults stop: back to the ordinary scheduler, the rest of the workload, and the end
    /// state checked ([`Sim::settle`]).
    pub(crate) fn settle(&mut self) -> Result<(), Violation> {
        if self.sim.config.trace > 0 {
            self.sim.trace_line("STEP settle".into());
        }
        self.sim.leave_stepwise();
        let limit = self.model.settle_limit;
        self.sim.settle(limit)?;
        let rest: Vec<Action> = self.model.workload[self.next_action..].to_vec();
        if !rest.is_empty() {
            self.next_action = self.model.workload.len();
            for action in rest {
                self.sim.act(action);
            }
            self.sim.settle(limit)?;
        }
        Ok(())
    }
}
