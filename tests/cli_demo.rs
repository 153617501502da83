//! `tether demo` end to end: server, client and fault-injecting proxy in one process.

mod cli_support;

use std::time::Duration;

use cli_support::*;

/// The value column of a summary row.
fn row<'a>(out: &'a [String], key: &str) -> &'a str {
    out.iter()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no row {key:?} in {out:#?}"))[key.len()..]
        .trim()
}

#[test]
fn the_demo_delivers_every_event_exactly_once_through_cuts_drops_and_duplicates() {
    let mut p = tether(&[
        "demo",
        "--events",
        "3000",
        "--cuts",
        "6",
        "--drops",
        "2",
        "--duplicates",
        "2",
        "--rate",
        "3000/s",
    ]);
    let status = p.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "stdout {:#?}\nstderr {:#?}",
        p.out,
        p.err
    );
    let out = &p.out;
    assert_eq!(row(out, "events published"), "3000");
    assert_eq!(row(out, "events delivered"), "3000");
    assert_eq!(row(out, "lost"), "0");
    assert_eq!(row(out, "duplicated (delivered twice)"), "0");
    assert_eq!(row(out, "out of order"), "0");
    assert_eq!(row(out, "reconnects"), "6");
    assert!(
        row(out, "faults injected").starts_with("6 cuts"),
        "{out:#?}"
    );
    assert!(row(out, "resume latency p50").ends_with("ms"), "{out:#?}");
    assert!(row(out, "resume latency p99").ends_with("ms"), "{out:#?}");
    assert!(out.last().unwrap().starts_with("result: OK"), "{out:#?}");
    // stderr is a pipe here: no progress bar drawing, just the one header line.
    assert_eq!(p.err.len(), 1, "{:#?}", p.err);
    assert!(p.err[0].starts_with("tether demo:"), "{:#?}", p.err);
}

#[test]
fn a_tiny_demo_without_faults_still_passes() {
    let mut p = tether(&[
        "demo",
        "--events",
        "1",
        "--cuts",
        "0",
        "--drops",
        "0",
        "--duplicates",
        "0",
    ]);
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{:#?} {:#?}", p.out, p.err);
    assert_eq!(row(&p.out, "events delivered"), "1");
    assert_eq!(row(&p.out, "resume latency p50"), "n/a");
}
