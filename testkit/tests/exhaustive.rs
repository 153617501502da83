//! The exhaustive explorer over the real client and server machines: every order of
//! deliveries, timers, application actions and faults in small worlds.
//!
//! * The CI sizes run in seconds. `TETHER_EXHAUSTIVE=full` runs the sizes whose figures
//!   docs/MODEL-CHECKING.md gives (1 client × 3 events × 2 faults, 2 clients × 2 events ×
//!   2 faults with takeovers; minutes in release):
//!   `TETHER_EXHAUSTIVE=full cargo test --release -p tether-testkit --test exhaustive -- --nocapture`
//! * A counterexample prints its shortest step list; paste it into [`replay`] as a regression
//!   test (see `a_planted_bug_is_found_with_a_short_trace`).

use std::time::{Duration, Instant};

use tether_core::injected_bugs::{with_bug, Bug};
use tether_testkit::exhaustive::{explore, replay, FaultKind, Model, ReplayError, Report, Step};

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

fn full() -> bool {
    std::env::var("TETHER_EXHAUSTIVE").is_ok_and(|v| v == "full")
}

/// Explores `model`, prints its figures under `name`, and insists every promise held over the
/// whole bounded space.
fn explore_all(name: &str, model: &Model) -> Report {
    let started = clock();
    let report = explore(model, clock());
    let secs = started.elapsed().as_secs_f64();
    println!(
        "exhaustive {name}: {} clients × 1 server × {} events × {} faults ({} kinds), \
         horizon {:?}: {report}; {secs:.1} s",
        model.clients.len(),
        model.workload.len(),
        model.faults,
        model.fault_kinds.len(),
        model.horizon,
    );
    assert!(report.passed(), "{name}: {report}");
    report
}

#[test]
fn every_order_of_one_client_with_faults_keeps_every_promise() {
    let mut model = if full() {
        Model::new(1, 3, 2)
    } else {
        Model::new(1, 1, 1)
    };
    model.horizon = Duration::from_millis(500);
    let report = explore_all("1 client", &model);
    assert!(report.coverage.resumes > 0 && report.coverage.losses_reported > 0);
}

#[test]
fn every_order_of_two_clients_with_takeovers_keeps_every_promise() {
    let mut model = if full() {
        Model::new(2, 2, 2)
    } else {
        Model::new(2, 1, 1)
    };
    model.horizon = Duration::from_millis(500);
    if !full() {
        model.fault_kinds = vec![FaultKind::Cut, FaultKind::RestartClient];
        model.persists = 0;
    }
    let report = explore_all("2 clients", &model);
    assert!(report.coverage.takeovers > 0, "a resume displaced a live connection");
}

#[test]
fn a_planted_bug_is_found_with_a_short_trace() {
    // The bug: a duplicate moves the client's expected counter back to its own number.
    let mut model = Model::new(1, 1, 2);
    model.horizon = Duration::from_millis(500);
    let origin = clock();
    let report = with_bug(Bug::DuplicateRewindsExpected, || explore(&model, origin));
    let found = report.counterexample.expect("the planted bug is found");
    println!("{found}");
    assert!(found.steps.len() <= 10, "{found}");
    assert!(found.violation.what.contains("twice"), "{found}");

    // The printed script replays: the bug reproduces with it, and the real machines pass it.
    let steps = Step::parse_trace(&found.script()).expect("the script reads back");
    let replayed = with_bug(Bug::DuplicateRewindsExpected, || replay(&model, origin, &steps));
    assert!(
        matches!(replayed, Err(ReplayError::Violation { index, .. }) if index + 1 == steps.len()),
        "{replayed:?}"
    );
    let mut fixed = steps.clone();
    fixed.push(Step::Settle);
    replay(&model, origin, &fixed).expect("without the bug the same steps keep every promise");
}
