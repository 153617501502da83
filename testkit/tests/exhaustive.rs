use std::time::Instant;

use tether_testkit::exhaustive::{explore, Model};

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

#[test]
fn probe() {
    let origin = clock();
    for d in [16] {
        let mut model = Model::new(1, 1, 0);
        model.persists = 0;
        model.max_states = 100000;
        model.max_depth = d;
        let t = clock();
        let r = explore(&model, origin);
        eprintln!("depth {d}: {r} in {:.2}s", t.elapsed().as_secs_f64());
    }
}
