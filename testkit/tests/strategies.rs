//! The public strategies keep their promises: the frames they call well-formed decode as frames
//! of their side, the hostile ones never do, schedules stay in order and in bounds, and the
//! simulator scenarios they draw pass every invariant — and are rich enough to catch an
//! application that ignores a reported loss.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestError, TestRunner};
use tether_core::client::Event;
use tether_core::wire::{ClientFrame, ServerFrame};
use tether_testkit::sim::{Action, Profile, Sim, SimConfig};
use tether_testkit::strategy::{
    action, bad_client_frame, bad_server_frame, client_frame, event_stream, fault_schedule,
    garbage, scenario, schedule, server_frame, version_range,
};

#[allow(clippy::disallowed_methods)] // the one clock read: the simulator's time is virtual
fn origin() -> Instant {
    Instant::now()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn well_formed_frames_decode_on_their_side(
        server in server_frame(),
        client in client_frame(),
    ) {
        let decoded = ServerFrame::decode(&server);
        prop_assert!(decoded.is_ok(), "{server}: {decoded:?}");
        let decoded = ClientFrame::decode(&client);
        prop_assert!(decoded.is_ok(), "{client}: {decoded:?}");
    }

    #[test]
    fn hostile_text_never_decodes(
        text in garbage(),
        server in bad_server_frame(),
        client in bad_client_frame(),
    ) {
        prop_assert!(ServerFrame::decode(&text).is_err(), "server side took {text}");
        prop_assert!(ClientFrame::decode(&text).is_err(), "client side took {text}");
        prop_assert!(ServerFrame::decode(&server).is_err(), "{server}");
        prop_assert!(ClientFrame::decode(&client).is_err(), "{client}");
    }

    #[test]
    fn event_streams_are_numbered_from_first(
        (first, frames) in (1..1_000u64, 0..20usize)
            .prop_flat_map(|(first, n)| (Just(first), event_stream(first, n)))
    ) {
        for (i, frame) in frames.iter().enumerate() {
            let Ok(ServerFrame::Event(e)) = ServerFrame::decode(frame) else {
                return Err(TestCaseError::fail(format!("not a live event: {frame}")));
            };
            prop_assert_eq!(e.sequence(), Some(first + i as u64));
        }
    }

    #[test]
    fn version_ranges_are_valid(v in version_range()) {
        prop_assert!(1 <= v.min() && v.min() <= v.max() && v.max() <= 3);
    }

    #[test]
    fn schedules_are_ordered_and_bounded(
        faults in fault_schedule(3, Duration::from_secs(20), 8),
        actions in schedule(action(3), Duration::from_secs(5), 4),
    ) {
        prop_assert!(faults.len() <= 8 && actions.len() <= 4);
        prop_assert!(faults.windows(2).all(|w| w[0].0 <= w[1].0));
        prop_assert!(actions.windows(2).all(|w| w[0].0 <= w[1].0));
        prop_assert!(faults.iter().all(|(at, _)| *at <= Duration::from_secs(20)));
        prop_assert!(actions.iter().all(|(at, _)| *at <= Duration::from_secs(5)));
    }
}

/// Small runs: a few seconds of faults on one or two clients.
fn small() -> Profile {
    Profile {
        min_clients: 1,
        max_clients: 2,
        min_duration: Duration::from_secs(5),
        max_duration: Duration::from_secs(10),
        max_faults: 4,
        lossy_restores: true,
    }
}

#[test]
fn drawn_scenarios_keep_every_invariant() {
    let origin = origin();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&scenario(small()), |s| {
            let faults = s.faults.len();
            s.run(origin)
                .map_err(|v| TestCaseError::fail(format!("{v} ({faults} faults)")))?;
            Ok(())
        })
        .unwrap();
}

/// What an application that ignores `Lost`, `ServerReset` and `SessionReplaced` believes: it
/// expects sequences 1, 2, 3... without a hole. `Err` names the first hole it sees.
fn naive_app(events: &[Event]) -> Result<(), String> {
    let mut expected = 1;
    for e in events {
        if let Event::Delivered(d) = e {
            if d.seq != expected {
                return Err(format!("hole: expected {expected}, got {}", d.seq));
            }
            expected = d.seq + 1;
        }
    }
    Ok(())
}

/// Drawn fault schedules expose an application that ignores what tether reports, and only
/// through what tether reports: a hole without a `Lost`, `ServerReset` or `SessionReplaced` is
/// a failure of its own.
#[test]
fn an_application_that_ignores_reported_losses_is_caught() {
    let origin = origin();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &(any::<u64>(), fault_schedule(1, Duration::from_secs(10), 4)),
        |(seed, faults)| {
            let mut sim = Sim::new(
                origin,
                SimConfig {
                    record_events: true,
                    ..SimConfig::new(seed)
                },
            );
            let c = sim.add_client();
            for (at, f) in faults {
                sim.schedule(at, f);
            }
            for t in 1..=10 {
                let publish = Action::Publish {
                    client: 0,
                    count: 3,
                };
                sim.schedule_action(Duration::from_secs(t), publish);
            }
            sim.run_until(Duration::from_secs(11))
                .map_err(|v| TestCaseError::fail(v.to_string()))?;
            sim.settle(Duration::from_secs(120))
                .map_err(|v| TestCaseError::fail(v.to_string()))?;
            let st = sim.stats();
            let reported = st.lost + st.resets + st.replaced;
            match naive_app(sim.events(c)) {
                Err(hole) if reported == 0 => Err(TestCaseError::fail(format!(
                    "tether broke its promise: {hole} with nothing reported"
                ))),
                Err(hole) => Err(TestCaseError::fail(format!("the naive app: {hole}"))),
                Ok(()) => Ok(()),
            }
        },
    );
    let Err(TestError::Fail(why, (seed, faults))) = result else {
        panic!("256 drawn fault schedules never made tether report a loss: {result:?}");
    };
    eprintln!("caught: {why}; shrunk to seed {seed}, faults {faults:?}");
    assert!(why.to_string().contains("the naive app: hole"), "{why}");
    assert!(!faults.is_empty(), "a loss needs a fault");
}
