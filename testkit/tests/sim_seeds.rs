//! The simulator's seed sweep: thousands of seeded scenarios (clients, server instances, a
//! faulty network, crashes and restarts), every invariant checked after every step.
//!
//! * `TETHER_SIM_SEEDS=n` (default 10000) and `TETHER_SIM_FIRST=s` (default 0) choose the seeds.
//! * A failure prints the seed, the shrunk fault schedule and the replay command:
//!   `TETHER_SIM_SEED=<seed> cargo test -p tether-testkit --test sim_seeds -- replay --nocapture`
//!   (add `TETHER_SIM_FAULTS=i,j` to replay the shrunk schedule).
//! * Nothing is tolerated: every defect the simulator found in the machines is fixed, and each
//!   has a regression test here or in the fuzz corpus.

use std::time::Instant;

use tether_testkit::sim::{self, Scenario, SimStats, FAULTS_ENV, SEED_ENV};

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn add(total: &mut SimStats, s: &SimStats) {
    total.faults += s.faults;
    total.opens += s.opens;
    total.published += s.published;
    total.delivered += s.delivered;
    total.lost += s.lost;
    total.resets += s.resets;
    total.replaced += s.replaced;
    total.requests_to_app += s.requests_to_app;
    total.reaped += s.reaped;
    total.slow_consumers += s.slow_consumers;
    total.taken_over += s.taken_over;
}

#[test]
fn ten_thousand_seeds() {
    let origin = clock();
    let first = env_u64("TETHER_SIM_FIRST").unwrap_or(0);
    let count = env_u64("TETHER_SIM_SEEDS").unwrap_or(10_000);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8) as u64;
    let started = clock();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut totals = SimStats::default();
                let mut seed = first + t;
                while seed < first + count {
                    match sim::check_scenario(&Scenario::generate(seed), origin) {
                        Ok(r) => add(&mut totals, &r.stats),
                        Err(f) => failures.push(f),
                    }
                    seed += threads;
                }
                (failures, totals)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut totals = SimStats::default();
    for w in workers {
        let (f, t) = w.join().expect("worker panicked");
        failures.extend(f);
        add(&mut totals, &t);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "sim: {count} seeds from {first} in {secs:.1}s on {threads} threads = {:.0} seeds/s",
        count as f64 / secs
    );
    let t = totals;
    eprintln!(
        "sim: {} faults, {} connections, {} events published, {} delivered, {} reported lost, \
         {} server resets, {} sessions replaced, {} requests to the app, {} reaped, {} slow \
         consumers, {} taken over",
        t.faults,
        t.opens,
        t.published,
        t.delivered,
        t.lost,
        t.resets,
        t.replaced,
        t.requests_to_app,
        t.reaped,
        t.slow_consumers,
        t.taken_over
    );
    failures.sort_by_key(|f| f.seed);
    for f in failures.iter().take(20) {
        eprintln!("  seed {}: {}", f.seed, f.violation);
    }
    if let Some(f) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!("{} failing seed(s) {seeds:?}; first:\n{f}", failures.len());
    }
}

/// Replays one seed with a trace: a no-op unless `TETHER_SIM_SEED` is set.
#[test]
fn replay() {
    let Some(seed) = env_u64(SEED_ENV) else {
        return;
    };
    let mut scenario = Scenario::generate(seed);
    if let Ok(list) = std::env::var(FAULTS_ENV) {
        let kept: Vec<usize> = list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        scenario = scenario.keep_faults(&kept);
    }
    scenario.config.trace = 1_000_000;
    eprintln!(
        "seed {seed}: {} clients, {:?} of faults, configs {:#?}",
        scenario.clients.len(),
        scenario.duration,
        scenario.config
    );
    for (i, (at, f)) in scenario.faults.iter().enumerate() {
        eprintln!("  fault [{i}] at {:.3}s: {f}", at.as_secs_f64());
    }
    let mut world = scenario.build(clock());
    let result = sim::run_built(&mut world, &scenario);
    for line in world.trace() {
        eprintln!("{line}");
    }
    match result {
        Ok(r) => eprintln!("seed {seed} passes: {:?}", r),
        Err(v) => panic!("seed {seed} fails: {v}"),
    }
}

/// One seed replays a run exactly: the same trace, line for line, from two different origins.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 45, 691] {
        let mut s = Scenario::generate(seed);
        s.config.trace = 1_000_000;
        let run = |origin: Instant| {
            let mut world = s.build(origin);
            let result = sim::run_built(&mut world, &s).map(|r| r.stats);
            (result, world.trace().map(str::to_owned).collect::<Vec<_>>())
        };
        let origin = clock();
        let (a, trace_a) = run(origin);
        let (b, trace_b) = run(origin + std::time::Duration::from_secs(3600));
        assert_eq!(a, b, "seed {seed}");
        assert!(
            trace_a.len() > 100,
            "seed {seed} traced {} lines",
            trace_a.len()
        );
        assert!(trace_a == trace_b, "seed {seed}: traces differ");
    }
}

/// Regression of a defect the simulator found: with the default `fallback_heartbeat`, a client
/// on the legacy `join` path (whose `joined` reply advertises no heartbeat) notices a half-open
/// socket instead of staying `Connected` forever.
#[test]
fn legacy_join_detects_half_open_with_default_config() {
    let mut config = sim::SimConfig::new(1);
    config.client.handshake = tether_core::client::HandshakeMode::Join;
    config.client.fallback_heartbeat =
        tether_core::client::ClientConfig::default().fallback_heartbeat;
    let mut world = sim::Sim::new(clock(), config);
    world.add_client();
    let half_open = sim::Fault::HalfOpen {
        client: 0,
        direction: sim::Direction::ToClient,
    };
    world.schedule(std::time::Duration::from_secs(2), half_open);
    if let Err(v) = world.run_until(std::time::Duration::from_secs(60)) {
        panic!("{v}");
    }
}
