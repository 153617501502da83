//! `tether check` against `tether serve`: every check passes, speaking v2 and with v1 forced
//! (where only the three v2-only checks are not applicable); without a producer of events the
//! checks that need one are reported not applicable, never passed; the JUnit file and the exit
//! codes follow the report.

mod cli_support;

use std::time::Duration;

use cli_support::{serve, tether, TempDir, Tether, TOKEN};
use serde_json::Value;

const OTHER_TOKEN: &str = "cli-test-token-of-another-principal";

/// `tether serve` as the checks need it: a second principal and agent, a short heartbeat (the
/// heartbeat checks wait a few beats), a small replay window (the window check fills it) and
/// the control hook. Returns the server, its URL and the hook's address.
fn server() -> (Tether, String, String) {
    let (mut server, url) = serve(
        &[
            "--token",
            OTHER_TOKEN,
            "--agent",
            "echo",
            "--agent",
            "helper",
            "--heartbeat-ms",
            "500",
            "--recovery-session-bytes",
            "256KiB",
            "--control",
            "127.0.0.1:0",
        ],
        "127.0.0.1:0",
    );
    let line = server.wait_stdout(Duration::from_secs(10), |l| {
        l.starts_with("control hook on ")
    });
    let control = line["control hook on ".len()..].to_owned();
    (server, url, control)
}

/// Runs `tether check URL ARGS --json`; returns the exit code and the report.
fn check(url: &str, args: &[&str]) -> (Option<i32>, Value, Vec<String>) {
    let mut all = vec!["check", url, "--json"];
    all.extend_from_slice(args);
    let mut run = tether(&all);
    let status = run.wait_exit(Duration::from_secs(120));
    let report: Value = serde_json::from_str(run.out.last().map_or("", String::as_str))
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {:?} {:?}", run.out, run.err));
    (status.code(), report, run.err.clone())
}

fn ids(report: &Value, status: &str) -> Vec<String> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn every_check_passes_against_tether_serve_in_v2_and_with_v1_forced() {
    let (_server, url, control) = server();
    let common = [
        "--token",
        TOKEN,
        "--other-token",
        OTHER_TOKEN,
        "--other-agent",
        "helper",
        "--control",
        control.as_str(),
    ];
    // Both runs at once: they use separate sessions of the same server.
    let v2 = {
        let (url, common) = (url.clone(), common.map(str::to_owned));
        std::thread::spawn(move || {
            let args: Vec<&str> = common.iter().map(String::as_str).collect();
            check(&url, &args)
        })
    };
    let mut v1_args = common.to_vec();
    v1_args.extend(["--protocol", "1"]);
    let (v1_code, v1, v1_err) = check(&url, &v1_args);
    let (v2_code, v2, v2_err) = v2.join().expect("the v2 run");

    assert!(
        v2["results"].as_array().expect("results").len() >= 30,
        "{v2}"
    );
    assert_eq!(v2["protocol"], 2);
    assert_eq!(
        ids(&v2, "fail"),
        Vec::<String>::new(),
        "v2 failures: {v2:#}"
    );
    assert_eq!(
        ids(&v2, "n/a"),
        Vec::<String>::new(),
        "v2: every check applies"
    );
    assert_eq!(
        (v2_code, v2["passed"].clone()),
        (Some(0), Value::Bool(true)),
        "{v2_err:?}"
    );

    assert_eq!(v1["protocol"], 1);
    assert_eq!(
        ids(&v1, "fail"),
        Vec::<String>::new(),
        "v1 failures: {v1:#}"
    );
    assert_eq!(
        ids(&v1, "n/a"),
        ["v2.replay-end", "v2.oldest-cursor", "v2.resync"],
        "v1: only the v2 checks are not applicable"
    );
    assert_eq!(v1_code, Some(0), "{v1_err:?}");
}

#[test]
fn without_a_producer_the_checks_that_need_events_are_not_applicable() {
    let (_server, url, _) = server();
    let dir = TempDir::new("check-junit");
    let junit = dir.file("report.xml");
    let (code, report, _) = check(
        &url,
        &[
            "--token",
            TOKEN,
            "--only",
            "resume.away-events",
            "--only",
            "resume.older-than-window",
            "--only",
            "heartbeat",
            "--only",
            "client.",
            "--junit",
            &junit,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        ids(&report, "n/a"),
        [
            "resume.away-events",
            "resume.older-than-window",
            "heartbeat.inbound-only",
            "client.exactly-once"
        ]
    );
    for r in report["results"].as_array().expect("results") {
        if r["status"] == "n/a" {
            assert!(
                r["detail"]
                    .as_str()
                    .expect("detail")
                    .contains("control hook"),
                "{r}"
            );
        }
    }
    assert_eq!(
        ids(&report, "pass"),
        [
            "heartbeat.ping-answered",
            "heartbeat.server-pings",
            "heartbeat.reaps-silent"
        ]
    );
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    assert_eq!(xml.matches("<testcase ").count(), 7, "{xml}");
    assert_eq!(xml.matches("<skipped ").count(), 4, "{xml}");
    assert!(
        xml.contains(r#"tests="7" failures="0" skipped="4""#),
        "{xml}"
    );
}

#[test]
fn a_failing_check_exits_1_with_its_evidence_and_a_heartbeat_too_slow_to_wait_for_is_n_a() {
    let (_server, url, control) = server();
    // The wrong agent's sessions still work, but `--wait 1s` is shorter than the heartbeat
    // checks need (500 ms beats): they are not applicable. The ownership check asked to
    // hand a session to a principal that is the same one (the same token) must fail.
    let (code, report, err) = check(
        &url,
        &[
            "--token",
            TOKEN,
            "--other-token",
            TOKEN,
            "--control",
            &control,
            "--wait",
            "1s",
            "--only",
            "heartbeat.reaps",
            "--only",
            "ownership.other-principal",
        ],
    );
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(ids(&report, "n/a"), ["heartbeat.reaps-silent"]);
    assert_eq!(ids(&report, "fail"), ["ownership.other-principal"]);
    let failed = &report["results"][1];
    assert!(
        failed["evidence"]
            .as_array()
            .expect("evidence")
            .iter()
            .any(|l| l.as_str().expect("line").contains("\"type\":\"hello_ok\"")),
        "{failed}"
    );
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with("tether: 1 of 1 applicable checks failed: ownership.other-principal"),
        "{err:?}"
    );
}

#[test]
fn an_unreachable_gateway_is_one_line_and_exit_1() {
    let line =
        cli_support::assert_one_line_failure(&["check", "ws://127.0.0.1:9/ws", "--token", "t"], 1);
    assert!(line.contains("cannot reach ws://127.0.0.1:9/ws"), "{line}");
}
