//! `tether serve --redis`: two node processes sharing one real Redis; `tether connect` with both
//! URLs streams from node A, node A is killed with SIGKILL mid-stream, and the client fails over
//! to node B and resumes: every event exactly once, in order.

mod cli_support;

use std::time::Duration;

use cli_support::*;
use tether_redis::testing::RedisServer;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_node_killed_mid_stream_is_survived_by_failing_over_to_the_other_node() {
    let redis = RedisServer::for_tests();
    let prefix = format!("cli-{}", std::process::id());
    let node_args = [
        "--redis",
        redis.url.as_str(),
        "--redis-prefix",
        prefix.as_str(),
        "--emit-rate",
        "1000/s",
    ];
    let (mut a, url_a) = serve(&node_args, "127.0.0.1:0");
    let (_b, url_b) = serve(&node_args, "127.0.0.1:0");
    let mut client = tether(&[
        "connect",
        &url_a,
        "--also",
        &url_b,
        "--agent-id",
        "echo",
        "--token",
        TOKEN,
        "--count",
        "1500",
        "--json",
    ]);
    client.wait_stdout_lines(300, LIMIT);
    a.signal("KILL");
    let _ = a.wait_exit(LIMIT);

    let status = client.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{:?}", client.err);
    assert_eq!(seqs(&client.out), (1..=1500).collect::<Vec<u64>>());
    assert!(
        client.err.iter().any(|l| l.contains("(resumed)")),
        "the client resumed its session on node B: {:?}",
        client.err
    );
    assert!(
        !client.err.iter().any(|l| l.starts_with("lost:")
            || l.starts_with("server reset:")
            || l.contains("could not be resumed")),
        "{:?}",
        client.err
    );
}
