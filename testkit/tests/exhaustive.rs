use std::time::Instant;

use tether_testkit::exhaustive::{explore, Model};

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

#[test]
fn probe() {
    let origin = clock();
    let c: usize = std::env::var("PC").map(|s| s.parse().unwrap()).unwrap_or(1);
    let e: u32 = std::env::var("PE").map(|s| s.parse().unwrap()).unwrap_or(1);
    let f: usize = std::env::var("PF").map(|s| s.parse().unwrap()).unwrap_or(0);
    let h: u64 = std::env::var("PH").map(|s| s.parse().unwrap()).unwrap_or(3000);
    let d: usize = std::env::var("PD").map(|s| s.parse().unwrap()).unwrap_or(80);
    let mut model = Model::new(c, e, f);
    model.persists = std::env::var("PP").map(|s| s.parse().unwrap()).unwrap_or(0);
    model.max_states = std::env::var("PS").map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    model.max_depth = d;
    model.horizon = std::time::Duration::from_millis(h);
    if std::env::var("NODROP").is_ok() { model.fault_kinds.retain(|k| *k != tether_testkit::exhaustive::FaultKind::DropFrame); }
    let t = clock();
    let r = explore(&model, origin);
    eprintln!("{c}c {e}e {f}f h{h}: {r} in {:.2}s", t.elapsed().as_secs_f64());
}
