//! `tether bench --quick` keeps working: every figure runs at tiny sizes and the table prints
//! with every row. No timing is asserted (targets are not enforced with `--quick`); the
//! PraisonAI rows may say SKIPPED when the peer cannot be installed (or TETHER_INTEROP=skip); the
//! Redis rows need a Redis (`TETHER_REDIS_URL` or `redis-server` on PATH), like the other tests.

mod cli_support;

use std::time::Duration;

use cli_support::*;

#[test]
fn the_quick_benchmark_prints_every_row() {
    let mut p = tether(&["bench", "--quick"]);
    let status = p.wait_exit(Duration::from_secs(300));
    assert_eq!(
        status.code(),
        Some(0),
        "stdout {:#?}\nstderr {:#?}",
        p.out,
        p.err
    );
    let row = |name: &str| {
        p.out
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name:?} in {:#?}", p.out))
            .clone()
    };
    for name in [
        "stream 1→1, tokio",
        "stream 1→1, async-std",
        "stream 1→1, smol",
        "stream 1→1, tokio, metrics on vs off",
        "reconnect → replay p50, tokio",
        "reconnect → replay p99, tokio",
        "idle sessions: RSS per session",
        "idle sessions, one agent: RSS/session",
        "fan-out 1→20: delivered/s",
        "fan-out 1→20: delivery p99",
        "redis: publish → 1 client",
        "redis: publish vs bare XADD+PUBLISH",
        "redis cluster: publish → 1 client",
        "redis: resume → replay p50",
        "redis: resume → replay p99",
    ] {
        let line = row(name);
        assert!(line.contains('×'), "{name} has no ratio: {line}");
    }
    for name in [
        "PraisonAI: server → 1 client",
        "PraisonAI: client vs bare, on Python",
        "PraisonAI: client vs bare, on tether",
    ] {
        let line = row(name);
        assert!(
            line.contains('×') || line.contains("SKIPPED"),
            "{name}: {line}"
        );
    }
    assert!(!p.out.iter().any(|l| l.contains("FAILED")), "{:#?}", p.out);
    let summary = p.out.last().expect("a summary line");
    assert!(
        summary.starts_with("18 figures in") && summary.contains("0 failed to run"),
        "{summary}"
    );
}

#[test]
fn an_unknown_group_is_a_usage_error() {
    let err = assert_one_line_failure(&["bench", "--only", "everything"], 2);
    assert!(err.contains("everything"), "{err}");
}
