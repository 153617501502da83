//! Breadth-first search over every order of steps, with repeated states pruned.
//!
//! The machines cannot be cloned, so a state is rebuilt by replaying its path from the start
//! (they are deterministic: the same steps give the same state). The search keeps, per
//! state, only its parent and the step that reached it (8 bytes), and a set of the 128-bit
//! fingerprints of the states seen. Breadth-first order makes the first counterexample found
//! a shortest one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use super::step::Step;
use super::world::World;
use super::Model;
use crate::sim::{SimStats, Violation};

/// How often something worth seeing happened during a search: the number of explored
/// transitions in which it happened (each counted once however many states it led to).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// A connection was displaced by a resume of its session elsewhere (close 4009).
    pub takeovers: u64,
    /// A connection was closed as a slow consumer (1013).
    pub slow_consumers: u64,
    /// The server reaped a silent connection (4002).
    pub reaps: u64,
    /// A session was resumed.
    pub resumes: u64,
    /// A client reported a loss (`Lost`), a `ServerReset` or a `SessionReplaced`.
    pub losses_reported: u64,
    /// A request reached the server application.
    pub requests: u64,
}

impl Coverage {
    fn count(&mut self, before: &SimStats, after: &SimStats) {
        let grew = |a: u64, b: u64| u64::from(b > a);
        self.takeovers += grew(before.taken_over, after.taken_over);
        self.slow_consumers += grew(before.slow_consumers, after.slow_consumers);
        self.reaps += grew(before.reaped, after.reaped);
        self.resumes += grew(before.sessions_resumed, after.sessions_resumed);
        let reported = |s: &SimStats| s.lost + s.resets + s.replaced;
        self.losses_reported += grew(reported(before), reported(after));
        self.requests += grew(before.requests_to_app, after.requests_to_app);
    }
}

/// What a search did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Distinct states reached (the initial one included).
    pub states: u64,
    /// Steps taken, including those that led to a state already seen.
    pub transitions: u64,
    /// Ends of paths (no step possible but faults and timers past the horizon) from which
    /// the world was settled and its end state checked.
    pub ends_settled: u64,
    /// The longest path explored, in steps.
    pub depth: usize,
    /// States left unexplored because of [`Model::max_depth`] or [`Model::max_states`] (0:
    /// the search covered the whole bounded space).
    pub cut_off: u64,
    /// What happened along the way.
    pub coverage: Coverage,
    /// The first broken invariant found: a shortest trace to it.
    pub counterexample: Option<Counterexample>,
}

impl Report {
    /// Whether the whole bounded space was explored and every invariant held.
    pub fn passed(&self) -> bool {
        self.counterexample.is_none() && self.cut_off == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.coverage;
        write!(
            f,
            "{} distinct states, {} transitions, {} path ends settled, depth {}, {} cut off; \
             transitions with a takeover {}, slow consumer {}, reap {}, resume {}, reported \
             loss {}, request to the app {}",
            self.states,
            self.transitions,
            self.ends_settled,
            self.depth,
            self.cut_off,
            c.takeovers,
            c.slow_consumers,
            c.reaps,
            c.resumes,
            c.losses_reported,
            c.requests
        )?;
        if let Some(ce) = &self.counterexample {
            write!(f, "\n{ce}")?;
        }
        Ok(())
    }
}

/// A broken invariant and the shortest step list that breaks it.
#[derive(Debug, Clone)]
pub struct Counterexample {
    /// The steps, from the initial state (the last one broke the invariant).
    pub steps: Vec<Step>,
    /// What broke.
    pub violation: Violation,
    /// The simulator's trace of the replayed steps (frames, events, faults).
    pub trace: Vec<String>,
}

impl Counterexample {
    /// The steps in their text form, one a line: what [`Step::parse_trace`] and
    /// [`replay`](super::replay) read, ready to paste into a regression test.
    pub fn script(&self) -> String {
        self.steps.iter().map(|s| format!("{s}\n")).collect()
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "counterexample in {} steps: {}",
            self.steps.len(),
            self.violation
        )?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>2}. {s}", i + 1)?;
        }
        writeln!(f, "trace:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay it: tether_testkit::exhaustive::replay(&model, origin, &Step::parse_trace(TRACE)?) \
             with TRACE the steps above"
        )
    }
}

/// One explored state: its parent and the step (an index into the interned steps).
#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    step: u32,
}

/// Steps interned by their text form.
#[derive(Default)]
struct Steps {
    all: Vec<Step>,
    index: HashMap<String, u32>,
}

impl Steps {
    fn intern(&mut self, step: &Step) -> u32 {
        let text = step.to_string();
        if let Some(&i) = self.index.get(&text) {
            return i;
        }
        let i = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        self.all.push(step.clone());
        self.index.insert(text, i);
        i
    }
}

const ROOT: u32 = u32::MAX;

fn path(nodes: &[Node], steps: &Steps, mut i: u32) -> Vec<Step> {
    let mut out = Vec::new();
    while i != 0 {
        let n = nodes[i as usize];
        out.push(steps.all[n.step as usize].clone());
        i = n.parent;
    }
    out.reverse();
    out
}

/// Rebuilds the state at the end of `path` (which was explored before).
fn rebuild<'m>(model: &'m Model, origin: Instant, path: &[Step]) -> Result<World<'m>, Violation> {
    let mut w = World::new(model, origin, 0)?;
    for step in path {
        w.apply_unchecked(step);
        w.sim.end_step()?;
    }
    Ok(w)
}

/// Replays `steps` with a trace, for a counterexample's printout.
fn counterexample(
    model: &Model,
    origin: Instant,
    steps: Vec<Step>,
    violation: Violation,
) -> Counterexample {
    let mut trace = Vec::new();
    if let Ok(mut w) = World::new(model, origin, 100_000) {
        for step in &steps {
            if w.apply(step).is_err() {
                break;
            }
        }
        trace = w.sim.trace().map(str::to_owned).collect();
    }
    Counterexample {
        steps,
        violation,
        trace,
    }
}

pub(crate) fn explore(model: &Model, origin: Instant) -> Report {
    let mut report = Report {
        states: 1,
        transitions: 0,
        ends_settled: 0,
        depth: 0,
        cut_off: 0,
        coverage: Coverage::default(),
        counterexample: None,
    };
    let root = match World::new(model, origin, 0) {
        Ok(w) => w,
        Err(v) => {
            report.counterexample = Some(counterexample(model, origin, Vec::new(), v));
            return report;
        }
    };
    let mut seen: HashSet<u128> = HashSet::new();
    seen.insert(root.key());
    drop(root);
    let mut steps = Steps::default();
    let mut nodes = vec![Node {
        parent: ROOT,
        step: 0,
    }];
    let mut depths = vec![0usize];
    let mut i = 0usize;
    while i < nodes.len() {
        let depth = depths[i];
        report.depth = report.depth.max(depth);
        let here = path(&nodes, &steps, i as u32);
        let fail = |report: &mut Report, steps: Vec<Step>, v: Violation| {
            report.counterexample = Some(counterexample(model, origin, steps, v));
        };
        let world = match rebuild(model, origin, &here) {
            Ok(w) => w,
            Err(v) => {
                let what = format!(
                    "replaying an explored path broke: the world is not deterministic: {}",
                    v.what
                );
                fail(&mut report, here, Violation { what, ..v });
                return report;
            }
        };
        let (free, faults) = world.steps();
        if depth >= model.max_depth {
            report.cut_off += 1;
            i += 1;
            continue;
        }
        let mut spare = Some(world);
        if free.is_empty() {
            report.ends_settled += 1;
            if let Some(Err(v)) = spare.take().map(|mut w| w.settle()) {
                let mut trace = here.clone();
                trace.push(Step::Settle);
                fail(&mut report, trace, v);
                return report;
            }
        }
        let children: Vec<Step> = free.into_iter().chain(faults).collect();
        let count = children.len();
        for (k, step) in children.into_iter().enumerate() {
            // The last child goes on in the world already built.
            let reuse = if k + 1 == count { spare.take() } else { None };
            let mut child = match reuse.map_or_else(|| rebuild(model, origin, &here), Ok) {
                Ok(w) => w,
                Err(_) => unreachable!("the path was rebuilt once already"),
            };
            let before = child.stats();
            child.apply_unchecked(&step);
            report.transitions += 1;
            if let Err(v) = child.sim.end_step() {
                let mut trace = here.clone();
                trace.push(step);
                fail(&mut report, trace, v);
                return report;
            }
            report.coverage.count(&before, &child.stats());
            if !seen.insert(child.key()) {
                continue;
            }
            if report.states >= model.max_states as u64 {
                report.cut_off += 1;
                continue;
            }
            report.states += 1;
            let id = steps.intern(&step);
            nodes.push(Node {
                parent: i as u32,
                step: id,
            });
            depths.push(depth + 1);
        }
        i += 1;
    }
    report
}
