//! `tether serve` + `tether connect` as two processes, the way the README runs them: events
//! delivered in order, a server restarted mid-stream from its state file, requests echoed, a
//! client restarted from its own state file.

mod cli_support;

use std::time::Duration;

use cli_support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn connect_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["connect", url, "--agent-id", "echo", "--token", TOKEN];
    args.extend_from_slice(extra);
    args
}

#[test]
fn serve_and_connect_deliver_a_thousand_events_in_order() {
    let (_server, url) = serve(&["--emit-rate", "2000/s"], "127.0.0.1:0");
    let mut client = tether(&connect_args(&url, &["--count", "1000", "--json"]));
    let status = client.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{:?}", client.err);
    assert_eq!(seqs(&client.out), (1..=1000).collect::<Vec<u64>>());
    // The synthetic stream numbers its events too: no event was re-numbered.
    for line in &client.out {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["n"], v["seq"], "{line}");
        assert_eq!(v["type"], "message", "{line}");
    }
}

#[test]
fn a_server_stopped_with_sigterm_mid_stream_and_restarted_from_its_state_file_loses_nothing() {
    let dir = TempDir::new("sigterm");
    let state = dir.file("sessions.json");
    let serve_args = ["--emit-rate", "500/s", "--state-file", state.as_str()];
    let (mut server, url) = serve(&serve_args, "127.0.0.1:0");
    let listen = format!("127.0.0.1:{}", port_of(&url));
    let mut client = tether(&connect_args(&url, &["--count", "1000", "--json"]));
    client.wait_stdout_lines(300, LIMIT);

    server.signal("TERM");
    assert_eq!(server.wait_exit(LIMIT).code(), Some(0), "{:?}", server.err);
    assert!(
        server
            .err
            .iter()
            .any(|l| l.starts_with("saved 1 session(s)")),
        "{:?}",
        server.err
    );
    let (_restarted, _) = serve(&serve_args, &listen);

    let status = client.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{:?}", client.err);
    assert_eq!(seqs(&client.out), (1..=1000).collect::<Vec<u64>>());
    assert!(
        client.err.iter().any(|l| l.contains("(resumed)")),
        "{:?}",
        client.err
    );
}

#[test]
fn a_server_killed_with_sigkill_restarts_from_its_last_periodic_save_and_the_client_says_so() {
    let dir = TempDir::new("sigkill");
    let state = dir.file("sessions.json");
    let serve_args = [
        "--emit-rate",
        "500/s",
        "--state-file",
        state.as_str(),
        "--save-every",
        "200ms",
    ];
    let (mut server, url) = serve(&serve_args, "127.0.0.1:0");
    let listen = format!("127.0.0.1:{}", port_of(&url));
    let mut client = tether(&connect_args(&url, &["--count", "1000", "--json"]));
    client.wait_stdout_lines(400, LIMIT);
    assert!(std::path::Path::new(&state).exists(), "a periodic save ran");

    server.signal("KILL");
    server.wait_exit(LIMIT);
    let (_restarted, _) = serve(&serve_args, &listen);

    let status = client.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{:?}", client.err);
    let seqs = seqs(&client.out);
    assert_eq!(seqs.len(), 1000);
    // Events published after the last save are gone from the server. If any of them had
    // reached the client, it reports the reset and numbering restarts after the saved head;
    // nothing is re-numbered silently.
    let reset = client.err.iter().find(|l| l.starts_with("server reset"));
    let drops: Vec<usize> = (1..seqs.len())
        .filter(|&i| seqs[i] != seqs[i - 1] + 1)
        .collect();
    match reset {
        None => assert!(drops.is_empty(), "no reset reported: {:?}", client.err),
        Some(line) => {
            assert_eq!(drops.len(), 1, "one restart point: {drops:?}");
            let head: u64 = line["server reset: it is at #".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(seqs[drops[0]], head + 1, "{line}");
            assert!(seqs[drops[0]] <= seqs[drops[0] - 1], "{line}");
        }
    }
}

#[test]
fn requests_are_answered_with_an_echo() {
    let (_server, url) = serve(&[], "127.0.0.1:0");
    let mut client = tether(&connect_args(
        &url,
        &["--send", "hello tether", "--count", "2"],
    ));
    let status = client.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{:?}", client.err);
    assert_eq!(client.out[0], "#1 response: Started processing.");
    assert_eq!(client.out[1], "#2 response: echo: hello tether");
    assert!(
        client
            .err
            .iter()
            .any(|l| l == r#"reply to "hello tether": echo: hello tether ({"status":"ok"})"#),
        "{:?}",
        client.err
    );
}

#[test]
fn an_interrupted_connect_resumes_from_its_state_file_where_it_stopped() {
    let dir = TempDir::new("client-state");
    let state = dir.file("client.json");
    let (_server, url) = serve(&["--emit-rate", "200/s"], "127.0.0.1:0");
    let mut first = tether(&connect_args(&url, &["--json", "--state-file", &state]));
    first.wait_stdout_lines(50, LIMIT);
    first.signal("INT");
    assert_eq!(first.wait_exit(LIMIT).code(), Some(130), "{:?}", first.err);
    let before = seqs(&first.out);
    let last = *before.last().unwrap();
    assert_eq!(before, (1..=last).collect::<Vec<u64>>());

    // The server keeps the detached session's events for the resume.
    let mut second = tether(&connect_args(
        &url,
        &["--json", "--state-file", &state, "--count", "100"],
    ));
    assert_eq!(second.wait_exit(LIMIT).code(), Some(0), "{:?}", second.err);
    assert_eq!(
        seqs(&second.out),
        (last + 1..=last + 100).collect::<Vec<u64>>()
    );
    assert!(
        second.err[0].starts_with("resuming session"),
        "{:?}",
        second.err
    );
}
