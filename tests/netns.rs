//! Real network faults with real processes: `tether serve` and `tether connect` in two network
//! namespaces joined by a veth pair, partitioned while events stream by taking one end of the
//! pair down (`ip link set ... down`: every packet dropped both ways, no FIN, no RST) for longer
//! than the client's silence limit, then healed, three times over.
//!
//! It shows, with the real binaries on a real kernel network stack:
//! * every event arrives once, in order, and none is lost (the recovery window outlasts the
//!   partitions by far; a loss would have to be reported on the client's stderr);
//! * the client detects the dead connection within the documented bound (no inbound frame for
//!   2 × the heartbeat; checked with one second of slack for a loaded machine's scheduling);
//! * it resumes its session once the network heals.
//!
//! Root only (CI runs as root; `.ci/run` and `scripts/test` install iproute2 when `ip` is
//! missing). Where namespaces cannot be created it prints one `SKIPPED:` line and passes.
//! Namespace and interface names are unique per run and removed at the end, also on a panic.
//! Run it alone with `cargo test --test netns -- --nocapture` for the figures.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const TOKEN: &str = "netns-test-token";
const HEARTBEAT: Duration = Duration::from_millis(1000);
/// The client declares the server dead after this much inbound silence (2 heartbeats).
const SILENCE_LIMIT: Duration = Duration::from_millis(2000);
/// Scheduling slack on top of the bound: the test's processes share a loaded machine.
const SLACK: Duration = Duration::from_secs(1);
/// Longer than the silence limit and its slack, so the client must notice each partition.
const PARTITION: Duration = Duration::from_millis(4000);
const PARTITIONS: usize = 3;
const LIMIT: Duration = Duration::from_secs(60);
const SERVER_ADDR: &str = "10.231.0.1";
const CLIENT_ADDR: &str = "10.231.0.2";

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

/// Runs `ip ARGS`; the error is its stderr (or why it could not start).
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by a veth pair; both removed on drop (which removes the pair too).
struct Network {
    namespaces: [String; 2],
    interfaces: [String; 2],
}

impl Network {
    /// `<name>-srv` holds `SERVER_ADDR` on one end, `<name>-cli` holds `CLIENT_ADDR`.
    fn create() -> Result<Self, String> {
        let id = std::process::id();
        let mut net = Network {
            namespaces: [format!("tether-{id}-srv"), format!("tether-{id}-cli")],
            // Interface names have at most 15 bytes; a pid has at most 7 digits.
            interfaces: [format!("tts{id}"), format!("ttc{id}")],
        };
        ip(&["netns", "add", &net.namespaces[0]])?;
        if let Err(e) = ip(&["netns", "add", &net.namespaces[1]]) {
            net.namespaces[1].clear(); // not ours to delete
            return Err(e);
        }
        let [srv_ns, cli_ns] = &net.namespaces;
        let [srv_if, cli_if] = &net.interfaces;
        ip(&[
            "link", "add", srv_if, "netns", srv_ns, "type", "veth", "peer", "name", cli_if,
            "netns", cli_ns,
        ])?;
        for (ns, dev, addr) in [(srv_ns, srv_if, SERVER_ADDR), (cli_ns, cli_if, CLIENT_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Takes one end of the pair down (`server_end`: the server's, else the client's) or up.
    fn set(&self, server_end: bool, up: bool) {
        let i = usize::from(!server_end);
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.namespaces[i],
            "link",
            "set",
            &self.interfaces[i],
            state,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().filter(|n| !n.is_empty()) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("netns cleanup: {e}");
            }
        }
    }
}

/// A line a process printed, with the moment the test read it.
struct Line {
    at: Instant,
    stderr: bool,
    text: String,
}

/// A `tether` process inside a namespace; killed on drop.
struct Process {
    child: Child,
    rx: Receiver<Line>,
    lines: Vec<Line>,
}

impl Process {
    fn start(namespace: &str, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace, env!("CARGO_BIN_EXE_tether")])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ip netns exec tether");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (pipe, stderr) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, false),
            (Box::new(err), true),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for text in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let line = Line {
                        at: clock(),
                        stderr,
                        text,
                    };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            rx,
            lines: Vec::new(),
        }
    }

    /// Reads lines until one after `since` satisfies `pred`; returns when it was read.
    fn wait_for(&mut self, since: Instant, what: &str, pred: impl Fn(&Line) -> bool) -> Instant {
        if let Some(l) = self.lines.iter().find(|l| l.at >= since && pred(l)) {
            return l.at;
        }
        let deadline = clock() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(clock());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.at >= since && pred(&line);
                    let at = line.at;
                    self.lines.push(line);
                    if hit {
                        return at;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no {what} within {LIMIT:?}; last lines: {:#?}",
                    self.lines
                        .iter()
                        .rev()
                        .take(12)
                        .map(|l| &l.text)
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits until `n` events were printed after `since`.
    fn wait_events(&mut self, since: Instant, n: usize) {
        let counted = |p: &Self| {
            p.lines
                .iter()
                .filter(|l| !l.stderr && l.at >= since)
                .count()
        };
        while counted(self) < n {
            self.wait_for(clock(), "event", |l| !l.stderr);
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.lines.extend(self.rx.try_iter());
        // The reader threads end at the pipes' end of file: take their last lines.
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(5)) {
            self.lines.push(line);
        }
    }

    fn stderr(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(|l| l.stderr)
            .map(|l| l.text.as_str())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[test]
fn partitions_longer_than_the_heartbeat_lose_nothing_and_are_detected_within_the_bound() {
    let network = match Network::create() {
        Ok(n) => n,
        Err(e) => {
            println!("SKIPPED: netns partition test: network namespaces unavailable ({e})");
            return;
        }
    };
    let started = clock();
    let listen = format!("{SERVER_ADDR}:8765");
    let heartbeat_ms = ms(HEARTBEAT).to_string();
    let mut server = Process::start(
        &network.namespaces[0],
        &[
            "serve",
            "--listen",
            &listen,
            "--token",
            TOKEN,
            "--emit-rate",
            "200/s",
            "--heartbeat-ms",
            &heartbeat_ms,
        ],
    );
    server.wait_for(started, "listening line", |l| {
        l.text.starts_with("listening on ")
    });
    let url = format!("ws://{listen}/ws");
    let mut client = Process::start(
        &network.namespaces[1],
        &[
            "connect",
            &url,
            "--agent-id",
            "netns",
            "--token",
            TOKEN,
            "--json",
            "--timeout",
            "0",
        ],
    );
    client.wait_for(started, "first connection", |l| {
        l.stderr && l.text.starts_with("connected:")
    });
    client.wait_events(started, 100);

    let mut figures = Vec::new();
    for k in 0..PARTITIONS {
        // Alternate the end: the server's (the client's packets vanish on the wire) and the
        // client's (its own interface is gone; it must not mistake that for a closed socket).
        let server_end = k % 2 == 0;
        let down = clock();
        network.set(server_end, false);
        std::thread::sleep(PARTITION); // the fault's length, not a synchronisation
        let up = clock();
        network.set(server_end, true);
        let detected = client.wait_for(down, "disconnect after the partition", |l| {
            l.stderr && l.text.starts_with("disconnected:")
        });
        let resumed = client.wait_for(up, "resume after the heal", |l| {
            l.stderr && l.text.starts_with("connected:")
        });
        client.wait_events(resumed, 100);
        let detect = detected - down;
        assert!(
            detected < up && detect <= SILENCE_LIMIT + SLACK,
            "partition {k}: the dead connection was detected {detect:?} after the partition \
             began (bound {SILENCE_LIMIT:?} + {SLACK:?} slack, healed after {PARTITION:?})"
        );
        let resumed_line = client
            .lines
            .iter()
            .find(|l| l.at == resumed && l.stderr)
            .map(|l| l.text.clone())
            .unwrap_or_default();
        assert!(resumed_line.contains("resumed"), "{resumed_line}");
        figures.push((server_end, detect, resumed - up));
    }
    client.stop();
    server.stop();

    let seqs: Vec<u64> = client
        .lines
        .iter()
        .filter(|l| !l.stderr)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.text).expect("a JSON event line");
            v["seq"].as_u64().expect("seq")
        })
        .collect();
    let losses: Vec<&str> = client
        .stderr()
        .filter(|l| l.starts_with("lost:") || l.contains("reset") || l.contains("replaced"))
        .collect();
    assert!(
        losses.is_empty(),
        "the recovery window outlasts every partition: {losses:?}"
    );
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(
        seqs == expected,
        "events out of order, twice or missing: {seqs:?}"
    );

    println!(
        "netns: {} events delivered once and in order over {:.1} s, {PARTITIONS} partitions of \
         {} ms (heartbeat {} ms, bound {} ms), nothing lost",
        seqs.len(),
        (clock() - started).as_secs_f64(),
        ms(PARTITION),
        ms(HEARTBEAT),
        ms(SILENCE_LIMIT),
    );
    for (k, (server_end, detect, resume)) in figures.iter().enumerate() {
        println!(
            "netns: partition {} ({} end down): dead connection detected after {} ms, \
             resumed {} ms after the heal",
            k + 1,
            if *server_end { "server" } else { "client" },
            ms(*detect),
            ms(*resume)
        );
    }
}
