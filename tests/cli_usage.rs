//! Bad input to the `tether` binary: one clear line on stderr, a documented non-zero exit
//! code, never a panic or a backtrace. Also: `--help` works on every subcommand.

mod cli_support;

use std::time::Duration;

use cli_support::*;

#[test]
fn help_is_available_on_every_subcommand_and_documents_the_exit_codes() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["connect", "--help"],
        vec!["demo", "--help"],
        vec!["help", "connect"],
    ] {
        let mut p = tether(&args);
        let status = p.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{args:?}");
        let text = p.out.join("\n");
        assert!(text.contains("Usage: tether"), "{args:?}: {text}");
        assert!(text.contains("Exit codes:"), "{args:?}: {text}");
    }
    let mut p = tether(&["--version"]);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn bad_flags_and_values_are_usage_errors_on_one_line() {
    for (args, needle) in [
        (vec!["connect", "ws://127.0.0.1:9/ws"], "--agent-id"),
        (
            vec![
                "connect",
                "ws://127.0.0.1:9/ws",
                "--agent-id",
                "a",
                "--bogus",
            ],
            "--bogus",
        ),
        (vec!["serve", "--emit-rate", "fast"], "fast"),
        (vec!["serve", "--emit-rate", "0/s"], "positive"),
        (vec!["serve", "--recovery-window", "0s"], "positive"),
        (vec!["serve", "--recovery-total-bytes", "lots"], "lots"),
        (vec!["demo", "--events", "lots"], "lots"),
        (
            vec![
                "connect",
                "ws://x/ws",
                "--agent-id",
                "a",
                "--timeout",
                "soon",
            ],
            "soon",
        ),
        (
            vec![
                "connect",
                "ws://x/ws",
                "--agent-id",
                "a",
                "--max-attempts",
                "0",
            ],
            "--max-attempts",
        ),
        (vec!["launch"], "launch"),
    ] {
        let line = assert_one_line_failure(&args, 2);
        assert!(line.contains(needle), "{args:?}: {line}");
        assert!(line.contains("--help"), "{args:?}: {line}");
    }
}

#[test]
fn bad_urls_are_usage_errors_on_one_line() {
    for url in [
        "not a url",
        "http://127.0.0.1:8765/ws",
        "127.0.0.1:8765",
        "WSS://127.0.0.1:8765/ws",
    ] {
        let line = assert_one_line_failure(&["connect", url, "--agent-id", "echo"], 2);
        assert!(
            line.contains("URL") || line.contains("scheme") || line.contains("wss://"),
            "{url}: {line}"
        );
    }
}

#[test]
fn an_unreachable_host_ends_with_one_clear_line_after_the_attempt_cap_or_the_timeout() {
    // A port nothing listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    for (limit, needle) in [
        (["--max-attempts", "2"], "2 failed attempts"),
        (["--timeout", "500ms"], "without a connection"),
    ] {
        let mut args = vec!["connect", url.as_str(), "--agent-id", "echo"];
        args.extend_from_slice(&limit);
        let mut p = tether(&args);
        let status = p.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{:?}", p.err);
        let last = p.err.last().expect("a reason on stderr");
        assert!(last.starts_with("tether: gave up"), "{last}");
        assert!(last.contains(needle), "{last}");
        assert!(last.contains("refused"), "{last}");
        assert!(!p.err.iter().any(|l| l.contains("panicked")), "{:?}", p.err);
    }
}

#[test]
fn a_server_that_cannot_listen_says_so_on_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = assert_one_line_failure(&["serve", "--listen", &addr, "--token", "t"], 1);
    assert!(
        line.contains("cannot serve on") && line.contains(&addr),
        "{line}"
    );
    let line = assert_one_line_failure(&["serve", "--listen", "nonsense", "--token", "t"], 1);
    assert!(line.contains("nonsense"), "{line}");
}

#[test]
fn a_corrupt_state_file_is_refused_on_one_line() {
    let dir = TempDir::new("corrupt");
    let file = dir.file("state.json");
    std::fs::write(&file, "not json").unwrap();
    let line = assert_one_line_failure(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t",
            "--state-file",
            &file,
        ],
        1,
    );
    assert!(line.contains("cannot restore sessions"), "{line}");
    let line = assert_one_line_failure(
        &[
            "connect",
            "ws://127.0.0.1:9/ws",
            "--agent-id",
            "echo",
            "--state-file",
            &file,
        ],
        2,
    );
    assert!(line.contains("is not a state file"), "{line}");
}

#[test]
fn a_wrong_token_stops_at_once_with_the_servers_code_and_next_step() {
    let (_server, url) = serve(&[], "127.0.0.1:0");
    let mut p = tether(&["connect", &url, "--agent-id", "echo", "--token", "wrong"]);
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{:?}", p.err);
    let last = p.err.last().unwrap();
    assert!(last.contains("auth_required"), "{last}");
    assert!(last.contains("next step: reauthenticate"), "{last}");
    let attempts = p.err.iter().filter(|l| l.starts_with("connecting")).count();
    assert_eq!(
        attempts, 1,
        "a terminal rejection is not retried: {:?}",
        p.err
    );
}

#[test]
fn an_unknown_agent_is_rejected_for_good() {
    let (_server, url) = serve(&["--agent", "echo"], "127.0.0.1:0");
    let mut p = tether(&["connect", &url, "--agent-id", "nobody", "--token", TOKEN]);
    let status = p.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{:?}", p.err);
    assert!(
        p.err.last().unwrap().contains("agent_not_found"),
        "{:?}",
        p.err
    );
}
