//! The fuzz bodies on stable, without cargo-fuzz: every file of the committed seed corpora
//! (`fuzz/corpus/<target>/`), then a few thousand deterministic pseudo-random inputs.
//!
//! The seeds are generated here, so they stay in step with the script encoding: the decode seeds
//! are the frames of the golden transcript plus some garbage, the client seeds are typed
//! [`Script`]s, each with what it must reach. After changing them, rewrite the files with
//! `TETHER_BLESS_SEEDS=1 cargo test -p tether-core --test fuzz_corpus`.
//!
//! Inputs that crash a body because of a bug in the core wait in `fuzz/regressions/<target>/`
//! (not in the corpus, so this suite stays green): `cargo test -p tether-core --test fuzz_corpus
//! -- --ignored` fails while any of them still crashes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tether_core::client::ClosedReason;
use tether_core::fuzz::{
    self, ClientSummary, Content, ErrorKind, Garbage, Input, LiveKind, Num, ReplayPath, ResumeSeed,
    Script, ServerText, Setup, Shape, TimeUnit,
};
use tether_core::rng::Rng;

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(sub)
}

/// `(file name, bytes)` of every file in `dir`, sorted by name; none if it does not exist.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("readable corpus dir").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("readable corpus file"))
        })
        .collect();
    out.sort();
    out
}

#[allow(clippy::disallowed_methods)] // the one clock read; the bodies take time as data
fn origin() -> Instant {
    Instant::now()
}

fn bless() -> bool {
    std::env::var_os("TETHER_BLESS_SEEDS").is_some()
}

/// Checks (or, when blessing, writes) the generated seeds against the files of `dir`.
fn check_seeds(dir: &Path, seeds: &[(String, Vec<u8>)]) {
    if bless() {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let committed = files(dir);
    for (name, bytes) in seeds {
        let found = committed.iter().find(|(n, _)| n == name);
        assert_eq!(
            found.map(|(_, b)| b),
            Some(bytes),
            "seed {name} is missing or stale in {}: rerun with TETHER_BLESS_SEEDS=1",
            dir.display()
        );
    }
}

// ------------------------------------------------------------------------------------ decode

const GARBAGE: &[&str] = &[
    "",
    " ",
    "{",
    "}",
    "[]",
    "[1,2,3]",
    "null",
    "5",
    "\"hello_ok\"",
    r#"{"type":"hello_ok"}"#,
    r#"{"type":"hello_ok","protocol":"1","session_id":"s"}"#,
    r#"{"type":"hello_ok","protocol":1,"session_id":"s","sequence":null,"x":1e308}"#,
    r#"{"type":"replay","event":{"type":"m","data":7,"source":null,"target":null,"sequence":-1}}"#,
    r#"{"type":"replay","event":{"type":"m","data":{},"data":{}}}"#,
    r#"{"type":"message","cursor":18446744073709551615,"seq":18446744073709551615}"#,
    r#"{"type":"message","seq":18446744073709551616}"#,
    r#"{"type":"error","cursor":null,"code":5}"#,
    r#"{"type":"ping","seq":3}"#,
    r#"{"type":"hel\u006co","protocol":{"min":2}}"#,
    r#"{"type":null,"content":{"a":[1.5,-0,2e-320]}}"#,
    r#"{"type":"leave","type":"join"}"#,
    r#"{"type":"snapshot","state":null,"timestamp":1.7976931348623157e308}"#,
    "{\"type\":\"message\",\"content\":\"\u{2028}\u{feff}\"}",
    "\u{feff}{\"type\":\"ping\"}",
];

fn decode_seeds() -> Vec<(String, Vec<u8>)> {
    let transcript = include_str!("fixtures/praisonai-transcript-frames.jsonl");
    let mut seeds: Vec<(String, Vec<u8>)> = transcript
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let record: serde_json::Value = serde_json::from_str(line).expect("fixture line");
            let text = record["text"].as_str().expect("fixture text").to_owned();
            (format!("transcript-{i:03}"), text.into_bytes())
        })
        .collect();
    seeds.extend(
        GARBAGE
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("garbage-{i:02}"), g.as_bytes().to_vec())),
    );
    seeds.push((
        "garbage-invalid-utf8".into(),
        b"{\"type\":\"\xff\xfe\"}".to_vec(),
    ));
    seeds
}

#[test]
fn decode_seeds_are_committed() {
    check_seeds(&fuzz_dir("corpus/decode"), &decode_seeds());
}

#[test]
fn decode_body_runs_over_its_corpus() {
    let corpus = files(&fuzz_dir("corpus/decode"));
    assert!(
        corpus.len() >= decode_seeds().len(),
        "decode corpus missing"
    );
    for (name, data) in &corpus {
        eprintln!("decode {name}");
        fuzz::decode(data);
    }
}

/// Random bytes, and corpus files with random byte edits, truncations and splices.
#[test]
fn decode_body_survives_pseudo_random_inputs() {
    let corpus = files(&fuzz_dir("corpus/decode"));
    let mut rng = Rng::from_u64(0xDEC0DE);
    for _ in 0..4000 {
        let data = mutate(&mut rng, &corpus, 300);
        fuzz::decode(&data);
    }
}

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn mutate(rng: &mut Rng, corpus: &[(String, Vec<u8>)], max_len: usize) -> Vec<u8> {
    const INTERESTING: &[&[u8]] = &[
        b"{",
        b"}",
        b"\"",
        b",",
        b":",
        b"null",
        b"-1",
        b"1e400",
        b"18446744073709551615",
        b"\\u0000",
    ];
    if corpus.is_empty() || below(rng, 4) == 0 {
        let mut data = vec![0u8; below(rng, max_len)];
        rng.fill_bytes(&mut data);
        return data;
    }
    let mut data = corpus[below(rng, corpus.len())].1.clone();
    for _ in 0..=below(rng, 4) {
        let at = below(rng, data.len() + 1);
        match below(rng, 5) {
            0 if !data.is_empty() => {
                let at = at.min(data.len() - 1);
                data[at] = rng.next_u64() as u8;
            }
            1 => data.truncate(at),
            2 => {
                let word = INTERESTING[below(rng, INTERESTING.len())];
                data.splice(at..at, word.iter().copied());
            }
            3 => {
                let other = &corpus[below(rng, corpus.len())].1;
                let from = below(rng, other.len() + 1);
                data.splice(at.., other[from..].iter().copied());
            }
            _ => {
                let end = (at + below(rng, 8)).min(data.len());
                data.drain(at..end);
            }
        }
    }
    data
}

// ------------------------------------------------------------------------------------ client

type Check = fn(&ClientSummary) -> bool;

fn text(t: ServerText) -> Input {
    Input::Text(t)
}

fn live(seq: Num) -> Input {
    text(ServerText::live(seq))
}

fn hello(protocol: u32) -> Vec<Input> {
    vec![Input::Connected, text(ServerText::hello_ok(protocol, 0))]
}

fn resumed_hello(protocol: u32, head: Num) -> Input {
    text(ServerText::HelloOk {
        protocol,
        session: 0,
        resumed: true,
        cursor: head,
        sequence: None,
        heartbeat_ms: None,
        resync_required: false,
    })
}

fn replay(seq: Num, path: ReplayPath) -> Input {
    text(ServerText::Replay { seq, path })
}

fn wait(amount: u16, unit: TimeUnit) -> Input {
    Input::Wait { amount, unit }
}

fn script(parts: &[&[Input]]) -> Script {
    Script::new(parts.concat())
}

fn with(setup: Setup, parts: &[&[Input]]) -> Script {
    Script {
        setup,
        inputs: parts.concat(),
    }
}

fn hello_error(code: &str, retry_after: Option<u64>) -> Input {
    let codes = [
        "auth_required",
        "auth_unauthorized",
        "protocol_unsupported",
        "pairing_required",
        "agent_not_found",
        "rate_limited",
    ];
    text(ServerText::HelloError {
        code: codes.iter().position(|c| *c == code).unwrap() as u8,
        next_step: 0,
        retry_after,
    })
}

/// Reconnect after a drop: the timer fires, the socket opens.
const RECONNECT: &[Input] = &[Input::FireTimer, Input::Connected];

fn client_seeds() -> Vec<(&'static str, Script, Check)> {
    use Input::*;
    use Num::*;
    const NEXT: Num = Num::NEXT;
    const SAME: Num = Num::SAME;
    let next3 = [live(NEXT), live(NEXT), live(NEXT)];
    vec![
        ("seed-hello-v1-live", script(&[&hello(1), &next3]), |s| {
            s.connections == 1 && s.delivered == 3
        }),
        ("seed-hello-v2-live", script(&[&hello(2), &next3]), |s| {
            s.connections == 1 && s.delivered == 3
        }),
        (
            "seed-join-fallback",
            script(&[
                &[Connected, text(ServerText::Error(ErrorKind::Bare))],
                &[text(ServerText::Joined {
                    session: 0,
                    cursor: Abs(0),
                    sequence: Some(Abs(0)),
                    protocol_version: Some(1),
                    resync_required: false,
                })],
                &next3,
            ]),
            |s| s.legacy == 1 && s.delivered == 3,
        ),
        (
            "seed-join-mode-snapshot",
            with(
                Setup {
                    join: true,
                    ..Setup::default()
                },
                &[
                    &[Connected],
                    &[text(ServerText::Joined {
                        session: 1,
                        cursor: Abs(20),
                        sequence: Some(Abs(20)),
                        protocol_version: None,
                        resync_required: true,
                    })],
                    &[text(ServerText::Snapshot), live(NEXT)],
                ],
            ),
            |s| s.legacy == 1 && s.snapshots == 1 && s.delivered == 1,
        ),
        (
            "seed-v1-gap-resume-replays",
            script(&[
                &hello(1),
                &[live(NEXT), live(Rel(3))],
                RECONNECT,
                &[resumed_hello(1, Rel(3))],
                &[
                    replay(NEXT, ReplayPath::Hello),
                    replay(NEXT, ReplayPath::Hello),
                ],
                &[replay(NEXT, ReplayPath::Hello), live(NEXT)],
            ]),
            |s| s.gaps == 1 && s.resumed == 1 && s.replayed == 3 && s.lost == 0,
        ),
        (
            "seed-v2-gap-resync",
            script(&[
                &hello(2),
                &[live(NEXT), live(Rel(3))],
                &[
                    replay(NEXT, ReplayPath::Hello),
                    replay(NEXT, ReplayPath::Hello),
                ],
                &[replay(NEXT, ReplayPath::Hello)],
                &[
                    text(ServerText::ReplayEnd { cursor: Some(SAME) }),
                    live(NEXT),
                ],
            ]),
            |s| s.resyncs == 1 && s.replayed == 3 && s.lost == 0 && s.delivered == 5,
        ),
        (
            "seed-v1-gap-unrepairable",
            script(&[
                &hello(1),
                &[live(NEXT), live(Rel(3))],
                RECONNECT,
                &[resumed_hello(1, Rel(3)), replay(Rel(3), ReplayPath::Join)],
            ]),
            |s| s.gaps == 1 && s.lost == 1 && s.replayed == 1,
        ),
        (
            "seed-no-repair-gap-reported-lost",
            with(
                Setup {
                    no_repair: true,
                    ..Setup::default()
                },
                &[&hello(2), &[live(NEXT), live(Rel(5)), live(NEXT)]],
            ),
            |s| s.gaps == 1 && s.lost == 1 && s.delivered == 3,
        ),
        (
            "seed-duplicates-and-stale",
            script(&[
                &hello(1),
                &next3,
                &[live(SAME), live(Rel(-2)), live(Abs(0)), live(NEXT)],
            ]),
            |s| s.delivered == 4 && s.gaps == 0,
        ),
        (
            "seed-v2-replay-end-reports-loss",
            script(&[
                &hello(2),
                &[live(NEXT), Closed(Some(1006))],
                RECONNECT,
                &[resumed_hello(2, Rel(4)), replay(NEXT, ReplayPath::Hello)],
                &[text(ServerText::ReplayEnd { cursor: None }), live(NEXT)],
            ]),
            |s| s.resumed == 1 && s.lost == 1 && s.delivered == 3,
        ),
        (
            "seed-resume-state-pending-requests",
            with(
                Setup {
                    resume: Some(ResumeSeed {
                        session: 0,
                        cursor: Some(5),
                        sequence: Some(5),
                        pending: 2,
                    }),
                    ..Setup::default()
                },
                &[
                    &[Connected, resumed_hello(2, Rel(2))],
                    &[
                        replay(NEXT, ReplayPath::Hello),
                        replay(NEXT, ReplayPath::Hello),
                    ],
                    &[text(ServerText::Live {
                        kind: LiveKind::Response {
                            request: 0,
                            status: 0,
                        },
                        seq: NEXT,
                        shape: Shape::Both,
                    })],
                    &[text(ServerText::Live {
                        kind: LiveKind::Response {
                            request: 0,
                            status: 1,
                        },
                        seq: NEXT,
                        shape: Shape::Both,
                    })],
                ],
            ),
            |s| s.resumed == 1 && s.replayed == 2 && s.request_updates == 2,
        ),
        (
            "seed-session-replaced",
            with(
                Setup {
                    resume: Some(ResumeSeed {
                        session: 1,
                        cursor: Some(9),
                        sequence: Some(9),
                        pending: 1,
                    }),
                    ..Setup::default()
                },
                &[&hello(2), &next3],
            ),
            |s| s.sessions_replaced == 1 && s.delivered == 3 && s.request_updates == 1,
        ),
        (
            "seed-server-reset",
            script(&[
                &hello(1),
                &next3,
                &[live(NEXT), Closed(None)],
                RECONNECT,
                &[resumed_hello(1, Abs(1)), live(Abs(2))],
            ]),
            |s| s.server_resets == 1 && s.delivered == 5,
        ),
        (
            "seed-hello-error-terminal",
            script(&[&[Connected, hello_error("auth_required", None)]]),
            |s| matches!(s.closed, Some(ClosedReason::Rejected(_))),
        ),
        (
            "seed-hello-error-rate-limited",
            script(&[
                &[Connected, hello_error("rate_limited", Some(5))],
                &[Closed(Some(1000))],
                RECONNECT,
                &hello(1)[1..],
            ]),
            |s| s.rejections == 1 && s.connections == 1 && s.closed.is_none(),
        ),
        (
            "seed-error-version-unsupported",
            script(&[&[
                Connected,
                text(ServerText::Error(ErrorKind::VersionUnsupported)),
            ]]),
            |s| matches!(s.closed, Some(ClosedReason::Rejected(_))),
        ),
        (
            "seed-unknown-type-error-then-join",
            script(&[
                &[Connected, text(ServerText::Error(ErrorKind::UnknownType))],
                &[text(ServerText::Joined {
                    session: 0,
                    cursor: Abs(0),
                    sequence: None,
                    protocol_version: None,
                    resync_required: false,
                })],
            ]),
            |s| s.legacy == 1,
        ),
        ("seed-protocol-violation", script(&[&hello(3)]), |s| {
            matches!(s.closed, Some(ClosedReason::ProtocolViolation(_)))
        }),
        (
            "seed-v2-only-meets-v1-server",
            with(
                Setup {
                    versions: 2,
                    ..Setup::default()
                },
                &[&hello(1)],
            ),
            |s| matches!(s.closed, Some(ClosedReason::ProtocolViolation(_))),
        ),
        (
            "seed-credentials-rotated",
            script(&[
                &hello(2),
                &[live(NEXT), Closed(Some(4001)), CredentialsRefreshed],
                &[Connected, resumed_hello(2, SAME), live(NEXT)],
            ]),
            |s| s.awaiting_credentials == 1 && s.connections == 2 && s.delivered == 2,
        ),
        (
            "seed-heartbeat-ping-then-dead",
            script(&[
                &[
                    Connected,
                    text(ServerText::HelloOk {
                        protocol: 2,
                        session: 0,
                        resumed: false,
                        cursor: Abs(0),
                        sequence: Some(Abs(0)),
                        heartbeat_ms: Some(100),
                        resync_required: false,
                    }),
                ],
                &[FireTimer, text(ServerText::Pong), FireTimer, FireTimer],
                &[FireTimer, FireTimer, Connected],
            ]),
            |s| s.opens == 2 && s.connections == 1,
        ),
        (
            "seed-fallback-heartbeat-server-ping",
            with(
                Setup {
                    heartbeat: Some(4),
                    ..Setup::default()
                },
                &[
                    &hello(1),
                    &[text(ServerText::Ping), wait(400, TimeUnit::Millis), Timeout],
                    &[live(NEXT), wait(2, TimeUnit::Secs), Timeout],
                ],
            ),
            |s| s.delivered == 1 && s.opens == 1,
        ),
        (
            "seed-handshake-timeout",
            script(&[
                &[Connected, wait(11, TimeUnit::Secs), Timeout],
                RECONNECT,
                &hello(1)[1..],
            ]),
            |s| s.opens == 2 && s.connections == 1,
        ),
        (
            "seed-connect-failed-give-up",
            with(
                Setup {
                    max_attempts: Some(2),
                    jitter: 1,
                    ..Setup::default()
                },
                &[&[
                    ConnectFailed,
                    FireTimer,
                    ConnectFailed,
                    FireTimer,
                    ConnectFailed,
                ]],
            ),
            |s| matches!(s.closed, Some(ClosedReason::GaveUp { .. })) && s.opens == 3,
        ),
        (
            "seed-max-elapsed-decorrelated",
            with(
                Setup {
                    max_elapsed_secs: Some(5),
                    jitter: 3,
                    ..Setup::default()
                },
                &[&[ConnectFailed, wait(3, TimeUnit::Secs), FireTimer][..]; 4],
            ),
            |s| matches!(s.closed, Some(ClosedReason::GaveUp { .. })),
        ),
        (
            "seed-outbox-requests",
            script(&[
                &[Send(Content::Text), SendWithId(0, Content::Object)],
                &hello(1),
                &[text(ServerText::Live {
                    kind: LiveKind::Response {
                        request: 1,
                        status: 0,
                    },
                    seq: NEXT,
                    shape: Shape::Both,
                })],
                &[text(ServerText::Live {
                    kind: LiveKind::Response {
                        request: 0,
                        status: 3,
                    },
                    seq: NEXT,
                    shape: Shape::Both,
                })],
                &[text(ServerText::Live {
                    kind: LiveKind::Response {
                        request: 0,
                        status: 2,
                    },
                    seq: NEXT,
                    shape: Shape::Both,
                })],
            ]),
            |s| s.request_updates == 3 && s.delivered == 3,
        ),
        (
            "seed-outbox-ambiguous-and-full",
            with(
                Setup {
                    no_resend: true,
                    outbox: 14,
                    ..Setup::default()
                },
                &[
                    &hello(1),
                    &[
                        Send(Content::Number),
                        Send(Content::Text),
                        Send(Content::Text),
                    ],
                    &[
                        Send(Content::Empty),
                        Send(Content::Null),
                        Closed(Some(1006)),
                    ],
                    RECONNECT,
                    &[resumed_hello(1, SAME), SendWithId(1, Content::Text)],
                    &[SendWithId(1, Content::Text)],
                ],
            ),
            |s| s.request_updates == 2 && s.connections == 2,
        ),
        (
            "seed-disconnect",
            script(&[
                &hello(1),
                &[live(NEXT), Disconnect, Send(Content::Text), Disconnect],
            ]),
            |s| matches!(s.closed, Some(ClosedReason::Requested)),
        ),
        (
            "seed-bad-frames",
            script(&[
                &hello(1),
                &[
                    Binary,
                    RawText("{\"type\":\"message\",\"seq\":".into()),
                    RawText("not json".into()),
                ],
                &[
                    Garbage::Empty,
                    Garbage::Truncated,
                    Garbage::Array,
                    Garbage::Null,
                    Garbage::NumericType,
                    Garbage::NegativeSeq,
                    Garbage::FloatSeq,
                    Garbage::HugeSeq,
                    Garbage::Untyped,
                    Garbage::Deep,
                ]
                .map(|g| text(ServerText::Garbage(g))),
                &[live(NEXT)],
            ]),
            |s| s.bad_frames >= 10 && s.delivered == 1,
        ),
        (
            "seed-small-frames",
            with(
                Setup {
                    small_frames: true,
                    ..Setup::default()
                },
                &[
                    &hello(1),
                    &[RawText(format!(
                        r#"{{"type":"message","content":"{}","cursor":1,"seq":1}}"#,
                        "x".repeat(200)
                    ))],
                    &[live(NEXT)],
                ],
            ),
            |s| s.bad_frames == 1 && s.delivered == 1,
        ),
        (
            "seed-notices-and-server-errors",
            script(&[
                &hello(2),
                &[
                    text(ServerText::Notice),
                    text(ServerText::Error(ErrorKind::AuthRequired)),
                ],
                &[text(ServerText::Error(ErrorKind::NewCode)), live(NEXT)],
                &[text(ServerText::Live {
                    kind: LiveKind::Error,
                    seq: NEXT,
                    shape: Shape::Both,
                })],
            ]),
            |s| s.notices == 1 && s.server_errors == 2 && s.delivered == 2,
        ),
        (
            "seed-replay-shapes",
            script(&[
                &hello(2),
                &[
                    replay(NEXT, ReplayPath::Join),
                    replay(NEXT, ReplayPath::Inner),
                    replay(NEXT, ReplayPath::NoSeq),
                    replay(NEXT, ReplayPath::BadData),
                ],
            ]),
            |s| s.replayed == 2 && s.bad_frames == 2,
        ),
        (
            "seed-tracked-shapes",
            script(&[
                &hello(1),
                &[
                    text(ServerText::Live {
                        kind: LiveKind::Token,
                        seq: NEXT,
                        shape: Shape::SeqOnly,
                    }),
                    text(ServerText::Live {
                        kind: LiveKind::Token,
                        seq: NEXT,
                        shape: Shape::CursorOnly,
                    }),
                    text(ServerText::Live {
                        kind: LiveKind::Message,
                        seq: NEXT,
                        shape: Shape::Split(SAME),
                    }),
                ],
            ]),
            |s| s.delivered == 3,
        ),
        (
            "seed-rate-limited-reconnect-loop",
            with(
                Setup {
                    seed: 7,
                    jitter: 2,
                    ..Setup::default()
                },
                &[&[
                    Connected,
                    hello_error("rate_limited", Some(1)),
                    Closed(None),
                    FireTimer,
                ][..]; 3],
            ),
            |s| s.rejections == 3 && s.opens == 4,
        ),
        (
            "seed-healthy-reset",
            script(&[
                &hello(2),
                &[wait(11, TimeUnit::Secs), FireTimer, Closed(Some(1001))],
                RECONNECT,
                &[resumed_hello(2, SAME), wait(1, TimeUnit::Hours), Timeout],
            ]),
            |s| s.connections == 2 && s.resumed == 1,
        ),
    ]
}

#[test]
fn client_seeds_are_committed_and_reach_what_they_claim() {
    let seeds = client_seeds();
    let origin = origin();
    let mut missed = Vec::new();
    for (name, script, check) in &seeds {
        let bytes = script.to_bytes();
        assert_eq!(
            &Script::from_bytes(&bytes),
            script,
            "{name} does not read back"
        );
        let summary = fuzz::run(origin, script);
        if !check(&summary) {
            missed.push(format!("{name}: {summary:?}"));
        }
    }
    assert!(
        missed.is_empty(),
        "seeds that miss their goal:\n{}",
        missed.join("\n")
    );
    let named: Vec<_> = seeds
        .iter()
        .map(|(name, script, _)| (name.to_string(), script.to_bytes()))
        .collect();
    check_seeds(&fuzz_dir("corpus/client"), &named);
}

#[test]
fn client_body_runs_over_its_corpus() {
    let corpus = files(&fuzz_dir("corpus/client"));
    assert!(
        corpus.len() >= client_seeds().len(),
        "client corpus missing"
    );
    let origin = origin();
    for (name, data) in &corpus {
        eprintln!("client {name}");
        fuzz::client_at(origin, data);
    }
}

#[test]
fn client_body_survives_pseudo_random_inputs() {
    let corpus = files(&fuzz_dir("corpus").join("client"));
    let origin = origin();
    let mut rng = Rng::from_u64(0xc11e47);
    for _ in 0..3000 {
        let data = mutate(&mut rng, &corpus, 400);
        let outcome = std::panic::catch_unwind(|| drop(fuzz::client_at(origin, &data)));
        if let Err(panic) = outcome {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("client body panicked: {msg}\n input: {data:02x?}");
        }
    }
}
