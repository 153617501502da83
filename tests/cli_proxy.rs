//! `tether proxy` between `tether connect` and `tether serve`, with a seeded schedule of every
//! kind of fault: the client prints every event exactly once, in order, and two runs with the
//! same seed print the same fault log.

mod cli_support;

use std::time::Duration;

use cli_support::{seqs, serve, tether, TempDir, TOKEN};
use serde_json::Value;

const EVENTS: u64 = 300;

/// One run: server, proxy, client. Returns the sequence numbers the client printed and the
/// proxy's fault log (the faults on events up to `EVENTS`: after the client's last event the
/// server goes on publishing until the client has closed).
fn run(seed: &str) -> (Vec<u64>, Vec<Value>) {
    // Pings every 300 ms: a half-open link is noticed within a second.
    let (_server, url) = serve(
        &["--heartbeat-ms", "300", "--emit-rate", "400/s"],
        "127.0.0.1:0",
    );
    let upstream = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let dir = TempDir::new("proxy-schedule");
    let schedule = dir.file("schedule.json");
    std::fs::write(
        &schedule,
        r#"[{"fault": "half_open", "seq": 100, "direction": "down"},
            {"fault": "half_open", "seq": 230, "direction": "up"}]"#,
    )
    .expect("write the schedule");
    let mut proxy = tether(&[
        "proxy",
        "127.0.0.1:0",
        &upstream,
        "--seed",
        seed,
        "--cut-every",
        "150",
        "--drop",
        "70",
        "--duplicate",
        "90",
        "--delay",
        "110:100ms",
        "--schedule",
        &schedule,
        "--json",
    ]);
    let banner: Value = serde_json::from_str(&proxy.wait_stdout(Duration::from_secs(10), |_| true))
        .expect("the proxy's first line is JSON");
    let through = banner["proxy"]
        .as_str()
        .expect("the proxy's URL")
        .to_owned();

    let count = EVENTS.to_string();
    let mut client = tether(&[
        "connect",
        &through,
        "--agent-id",
        "echo",
        "--token",
        TOKEN,
        "--count",
        &count,
        "--json",
    ]);
    let status = client.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "connect failed: {:?}", client.err);

    proxy.signal("INT");
    proxy.wait_exit(Duration::from_secs(10));
    let log = proxy.out[1..]
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON fault line"))
        .filter(|f| f["seq"].as_u64().is_some_and(|s| s <= EVENTS))
        .collect();
    (seqs(&client.out), log)
}

#[test]
fn every_event_once_in_order_through_the_proxy_and_the_same_faults_for_the_same_seed() {
    // The two runs at once: each has its own server, proxy and client.
    let first = std::thread::spawn(|| run("11"));
    let (delivered, log) = run("11");
    let (delivered_again, log_again) = first.join().expect("the first run");

    let all: Vec<u64> = (1..=EVENTS).collect();
    assert_eq!(delivered, all, "exactly once, in order");
    assert_eq!(delivered_again, all, "exactly once, in order (again)");
    assert_eq!(log, log_again, "the same seed, the same faults");

    let kinds: Vec<String> = log
        .iter()
        .map(|f| match f["direction"].as_str() {
            Some(d) => format!("half_open {d}"),
            None => f["fault"].as_str().expect("fault").to_owned(),
        })
        .collect();
    for kind in [
        "cut",
        "drop",
        "duplicate",
        "delay",
        "half_open down",
        "half_open up",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {log:?}");
    }
    // Ranked in order of their events: sequence numbers first cross the proxy in order.
    for (i, f) in log.iter().enumerate() {
        assert_eq!(f["n"], i as u64 + 1, "{log:?}");
    }
    let hit: Vec<u64> = log
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert!(hit.windows(2).all(|w| w[0] < w[1]), "{log:?}");
}
