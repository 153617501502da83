//! The fuzz bodies on stable, without cargo-fuzz: every file of the committed seed corpora
//! (`fuzz/corpus/<target>/`), then deterministic pseudo-random inputs (mutated seeds).
//!
//! The seeds are generated here, so they stay in step with the script encodings: the decode seeds
//! are the frames of the golden transcript plus some garbage, the client, server and sim seeds are
//! typed scripts, each with what it must reach. After changing them, rewrite the files with
//! `TETHER_BLESS_SEEDS=1 cargo test -p tether-testkit --test fuzz_corpus`.
//!
//! An input that crashes a body because of an open bug in the core is never committed to a
//! corpus (this suite stays green and the bug is reported); once the bug is fixed it joins the
//! corpus as a `regression-*` file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tether_core::client::ClosedReason;
use tether_core::rng::Rng;
use tether_testkit::fuzz::{
    self, Agent, ClientGarbage, ClientSummary, ClientText, Content, ErrorKind, Garbage, Input,
    LiveKind, MsgContent, Num, ReplayPath, ReqId, RestoreFrom, ResumeSeed, Script, SentBytes,
    ServerScript, ServerSetup, ServerSummary, ServerText, SessionRef, Setup, Shape, Since, Step,
    TimeUnit, Token, Ver, Versions,
};

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
    let transcript = include_str!("../../core/tests/fixtures/praisonai-transcript-frames.jsonl");
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

// ------------------------------------------------------------------------------------ server

type ServerCheck = fn(&ServerSummary) -> bool;

/// A server with room: rings of 16, a wide window confirmed at once, 5 s heartbeats, 10 s
/// handshakes, dedup of 4096, four sessions and connections.
fn roomy() -> ServerSetup {
    ServerSetup {
        auto_ack: true,
        ring: 2,
        window: 3,
        control: 3,
        dedup: 2,
        sessions: 2,
        connections: 2,
        heartbeat: 1,
        handshake: 2,
        ..ServerSetup::default()
    }
}

fn sv(setup: ServerSetup, parts: &[&[Step]]) -> ServerScript {
    ServerScript {
        setup,
        steps: parts.concat(),
    }
}

fn connect(conn: u8) -> Step {
    Step::Connect {
        conn,
        token: Token::Right,
    }
}

fn say(conn: u8, text: ClientText) -> Step {
    Step::Text { conn, text }
}

fn hello_on(conn: u8, max: i8, session: SessionRef, since: Since) -> Step {
    say(
        conn,
        ClientText::Hello {
            agent: Agent::Known,
            versions: Versions::Flat(Ver::Int(1), Ver::Int(max)),
            session,
            since,
            streaming: false,
        },
    )
}

/// Connect `conn` and open a new session at version `max`.
fn open(conn: u8, max: i8) -> [Step; 2] {
    [
        connect(conn),
        hello_on(conn, max, SessionRef::None, Since::None),
    ]
}

/// Connect `conn` and resume the newest session from `since`.
fn resume(conn: u8, max: i8, since: Since) -> [Step; 2] {
    [
        connect(conn),
        hello_on(conn, max, SessionRef::Known(0), since),
    ]
}

fn msg(conn: u8, id: ReqId) -> Step {
    say(
        conn,
        ClientText::Message {
            content: MsgContent::Text,
            request_id: id,
            untyped: false,
        },
    )
}

fn publish(n: usize) -> Vec<Step> {
    vec![
        Step::Publish {
            session: SessionRef::Known(0),
            kind: fuzz::Publish::Small,
        };
        n
    ]
}

fn hello_versions(conn: u8, versions: Versions) -> Step {
    say(
        conn,
        ClientText::Hello {
            agent: Agent::Known,
            versions,
            session: SessionRef::None,
            since: Since::None,
            streaming: true,
        },
    )
}

fn server_seeds() -> Vec<(&'static str, ServerScript, ServerCheck)> {
    use SessionRef::Known;
    use Step::*;
    let r = roomy();
    let tight = ServerSetup {
        auto_ack: false,
        ring: 1,
        window: 0,
        ..roomy()
    };
    let to_all = |n| {
        vec![
            Step::Publish {
                session: SessionRef::None,
                kind: fuzz::Publish::Shared,
            };
            n
        ]
    };
    vec![
        ("seed-hello-v1", sv(r, &[&open(0, 1)]), |s| {
            s.hello_oks == 1 && s.created == 1 && s.replay_ends == 0
        }),
        (
            "seed-publish-to-every-session",
            sv(
                r,
                &[
                    &open(0, 2),
                    &open(1, 1),
                    &to_all(3),
                    &publish(1),
                    &to_all(2),
                    &[Closed { conn: 1 }],
                    &to_all(2),
                    &resume(1, 2, Since::Abs(0)),
                ],
            ),
            |s| s.published == 15 && s.live >= 11 && s.replays >= 7,
        ),
        (
            "seed-hello-v2-live",
            sv(r, &[&open(0, 2), &publish(3)]),
            |s| s.hello_oks == 1 && s.replay_ends == 1 && s.live == 3,
        ),
        (
            "seed-join-legacy",
            sv(
                r,
                &[&[
                    connect(0),
                    say(
                        0,
                        ClientText::Join {
                            agent: Agent::Known,
                            min: Ver::Absent,
                            max: Ver::Absent,
                            session: SessionRef::None,
                            since: Since::None,
                        },
                    ),
                ]],
            ),
            |s| s.joined == 1 && s.created == 1,
        ),
        (
            "seed-join-resync-required",
            sv(
                ServerSetup { ring: 1, ..r },
                &[
                    &open(0, 1),
                    &publish(6),
                    &[Closed { conn: 0 }, connect(1)],
                    &[say(
                        1,
                        ClientText::Join {
                            agent: Agent::Known,
                            min: Ver::Int(1),
                            max: Ver::Int(2),
                            session: Known(0),
                            since: Since::Rel(-6),
                        },
                    )],
                ],
            ),
            |s| s.joined == 1 && s.resumed_with_loss == 1 && s.replays == 3,
        ),
        (
            "seed-auth-wrong-and-absent-token",
            sv(
                ServerSetup { auth: true, ..r },
                &[&[
                    Connect {
                        conn: 0,
                        token: Token::Wrong,
                    },
                    Connect {
                        conn: 1,
                        token: Token::Absent,
                    },
                    say(0, ClientText::Ping),
                ]],
            ),
            |s| s.rejected == 2 && s.closes_with(4003) == 2 && s.hello_errors == 2,
        ),
        (
            "seed-auth-right-token",
            sv(ServerSetup { auth: true, ..r }, &[&open(0, 2)]),
            |s| s.hello_oks == 1 && s.rejected == 0,
        ),
        (
            "seed-resume-replays",
            sv(
                r,
                &[
                    &open(0, 2),
                    &publish(3),
                    &[Closed { conn: 0 }],
                    &resume(1, 2, Since::Rel(-2)),
                ],
            ),
            |s| s.resumed == 1 && s.replays == 2 && s.replay_ends == 2,
        ),
        (
            "seed-resume-v1-replays",
            sv(
                r,
                &[
                    &open(0, 1),
                    &publish(3),
                    &[Closed { conn: 0 }],
                    &resume(1, 1, Since::Rel(-3)),
                    &publish(1),
                ],
            ),
            |s| s.resumed == 1 && s.replays == 3 && s.live == 4,
        ),
        (
            "seed-resume-lost",
            sv(
                ServerSetup { ring: 1, ..r },
                &[
                    &open(0, 2),
                    &[Closed { conn: 0 }],
                    &publish(6),
                    &resume(1, 2, Since::Rel(-6)),
                ],
            ),
            |s| s.resumed_with_loss == 1 && s.replays == 3,
        ),
        (
            "seed-takeover",
            sv(
                r,
                &[
                    &open(0, 2),
                    &publish(1),
                    &resume(1, 2, Since::Rel(0)),
                    &publish(1),
                ],
            ),
            |s| s.takeovers == 1 && s.closes_with(4009) == 1 && s.live == 2,
        ),
        (
            "seed-requests-dedup",
            sv(
                r,
                &[&open(0, 2), &[msg(0, ReqId::Id(0)), msg(0, ReqId::Id(0))]],
            ),
            |s| s.requests == 1 && s.duplicates == 1,
        ),
        (
            "seed-respond-then-duplicate",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[
                        msg(0, ReqId::Id(1)),
                        Respond {
                            request: 0,
                            status: 0,
                        },
                        Respond {
                            request: 0,
                            status: 1,
                        },
                        msg(0, ReqId::Id(1)),
                        msg(0, ReqId::None),
                    ],
                ],
            ),
            |s| s.requests == 2 && s.finals == 1 && s.duplicates == 1 && s.responded == 1,
        ),
        (
            "seed-resend-after-reconnect",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[msg(0, ReqId::Id(2)), Closed { conn: 0 }],
                    &resume(1, 2, Since::Rel(0)),
                    &[msg(1, ReqId::Id(2))],
                ],
            ),
            |s| s.requests == 1 && s.duplicates == 1 && s.resumed == 1,
        ),
        (
            "seed-dedup-window-evicts",
            sv(
                ServerSetup { dedup: 0, ..r },
                &[&open(0, 2), &[0, 1, 2, 0].map(|i| msg(0, ReqId::Id(i)))],
            ),
            |s| s.requests == 4 && s.duplicates == 0,
        ),
        (
            "seed-dedup-ttl-expires",
            sv(
                ServerSetup {
                    short_ttl: true,
                    heartbeat: 3,
                    ..r
                },
                &[
                    &open(0, 2),
                    &[
                        msg(0, ReqId::Id(3)),
                        Wait {
                            amount: 21,
                            unit: TimeUnit::Secs,
                        },
                        msg(0, ReqId::Id(3)),
                    ],
                ],
            ),
            |s| s.requests == 2,
        ),
        (
            "seed-slow-consumer",
            sv(tight, &[&open(0, 2), &publish(6)]),
            |s| s.closes_with(1013) == 1,
        ),
        (
            "seed-flow-control-sent",
            sv(
                ServerSetup {
                    auto_ack: false,
                    window: 0,
                    ..r
                },
                &[
                    &open(0, 1),
                    &publish(3),
                    &[
                        Sent {
                            conn: 0,
                            bytes: SentBytes::Exact,
                        },
                        Sent {
                            conn: 0,
                            bytes: SentBytes::Exact,
                        },
                        SentAll { conn: 0 },
                        SentAll { conn: 0 },
                    ],
                ],
            ),
            |s| s.live == 3 && s.closes.is_empty(),
        ),
        (
            "seed-sent-miscounted",
            sv(
                ServerSetup {
                    auto_ack: false,
                    window: 1,
                    small_bytes: true,
                    ..r
                },
                &[
                    &open(0, 2),
                    &[
                        Step::Publish {
                            session: Known(0),
                            kind: fuzz::Publish::Large,
                        },
                        Sent {
                            conn: 0,
                            bytes: SentBytes::Zero,
                        },
                        Sent {
                            conn: 0,
                            bytes: SentBytes::Double,
                        },
                        Sent {
                            conn: 0,
                            bytes: SentBytes::Max,
                        },
                        Sent {
                            conn: 3,
                            bytes: SentBytes::Max,
                        },
                    ],
                    &publish(2),
                    &[SentAll { conn: 0 }],
                ],
            ),
            |s| s.live == 3,
        ),
        (
            "seed-heartbeat-ping-then-reap",
            sv(
                ServerSetup { heartbeat: 0, ..r },
                &[&open(0, 2), &[FireTimer, FireTimer, FireTimer, FireTimer]],
            ),
            |s| s.pings >= 1 && s.closes_with(4002) == 1,
        ),
        (
            "seed-heartbeat-kept-alive",
            sv(
                ServerSetup { heartbeat: 0, ..r },
                &[
                    &open(0, 2),
                    &(0..4)
                        .flat_map(|_| [FireTimer, say(0, ClientText::Pong)])
                        .collect::<Vec<_>>(),
                ],
            ),
            |s| s.pings >= 3 && s.closes.is_empty(),
        ),
        (
            "seed-handshake-timeout",
            sv(r, &[&[connect(0), FireTimer, Timeout]]),
            |s| s.closes_with(1008) == 1 && s.bad_inputs == 1,
        ),
        (
            "seed-session-expiry",
            sv(
                ServerSetup {
                    short_ttl: true,
                    ..r
                },
                &[
                    &open(0, 2),
                    &[
                        Closed { conn: 0 },
                        Wait {
                            amount: 6,
                            unit: TimeUnit::Secs,
                        },
                        Timeout,
                    ],
                    &resume(1, 2, Since::Rel(0)),
                ],
            ),
            |s| s.expired == 1 && s.created == 2 && s.resumed == 0,
        ),
        (
            "seed-versions-ill-typed-and-inverted",
            sv(
                r,
                &[
                    &[connect(0)],
                    &[
                        Versions::Flat(Ver::Int(3), Ver::Int(1)),
                        Versions::Flat(Ver::Str, Ver::Int(2)),
                        Versions::Flat(Ver::Int(1), Ver::Bool),
                        Versions::Flat(Ver::Float, Ver::Absent),
                        Versions::Flat(Ver::Null, Ver::Null),
                        Versions::Flat(Ver::Int(-1), Ver::Huge),
                        Versions::Nested(Ver::Int(2), Ver::Int(0)),
                        Versions::Nested(Ver::Absent, Ver::Int(3)),
                    ]
                    .map(|v| hello_versions(0, v)),
                ],
            ),
            |s| s.hello_errors == 6 && s.bad_inputs == 6 && s.hello_oks == 2,
        ),
        (
            "seed-v2-only-server-meets-v1",
            sv(
                ServerSetup { versions: 2, ..r },
                &[&open(0, 1), &open(1, 2)],
            ),
            |s| s.hello_errors == 1 && s.hello_oks == 1,
        ),
        (
            "seed-join-version-mismatch",
            sv(
                ServerSetup { versions: 1, ..r },
                &[&[
                    connect(0),
                    say(
                        0,
                        ClientText::Join {
                            agent: Agent::Known,
                            min: Ver::Int(2),
                            max: Ver::Int(3),
                            session: SessionRef::None,
                            since: Since::Negative,
                        },
                    ),
                    say(
                        0,
                        ClientText::Join {
                            agent: Agent::Known,
                            min: Ver::Int(2),
                            max: Ver::Int(3),
                            session: SessionRef::None,
                            since: Since::None,
                        },
                    ),
                ]],
            ),
            |s| s.rejected == 1 && s.bad_inputs == 1,
        ),
        (
            "seed-unknown-agents",
            sv(
                r,
                &[
                    &[connect(0)],
                    &[Agent::Other, Agent::Absent, Agent::Empty].map(|agent| {
                        say(
                            0,
                            ClientText::Hello {
                                agent,
                                versions: Versions::Flat(Ver::Int(1), Ver::Int(2)),
                                session: SessionRef::None,
                                since: Since::None,
                                streaming: false,
                            },
                        )
                    }),
                ],
            ),
            |s| s.rejected == 3 && s.hello_errors == 3,
        ),
        (
            "seed-bad-since",
            sv(
                r,
                &[&[
                    connect(0),
                    hello_on(0, 2, SessionRef::Unknown, Since::Str),
                    hello_on(0, 2, SessionRef::Empty, Since::Abs(u64::MAX)),
                ]],
            ),
            |s| s.hello_errors == 1 && s.hello_oks == 1 && s.created == 1,
        ),
        (
            "seed-garbage-binary-oversized",
            sv(
                ServerSetup {
                    small_payload: true,
                    ..r
                },
                &[
                    &open(0, 2),
                    &open(1, 2),
                    &open(2, 2),
                    &[
                        say(0, ClientText::Garbage(ClientGarbage::NotJson)),
                        Binary { conn: 1 },
                        say(2, ClientText::Oversized),
                    ],
                ],
            ),
            |s| s.closes_with(1007) == 1 && s.closes_with(1003) == 1 && s.closes_with(1009) == 1,
        ),
        (
            "seed-garbage-kinds",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[
                        ClientGarbage::IllTypedHello,
                        ClientGarbage::NumericType,
                        ClientGarbage::Deep,
                        ClientGarbage::Truncated,
                    ]
                    .map(|g| say(0, ClientText::Garbage(g))),
                ],
            ),
            |s| s.bad_inputs >= 3 && s.closes.len() == 1,
        ),
        (
            "seed-unknown-frame-flood",
            sv(r, &[&open(0, 2), &vec![say(0, ClientText::Unknown); 4]]),
            |s| s.closes_with(4028) == 1,
        ),
        (
            "seed-empty-content-refused",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[
                        MsgContent::Empty,
                        MsgContent::Blank,
                        MsgContent::Null,
                        MsgContent::Absent,
                    ]
                    .map(|content| {
                        say(
                            0,
                            ClientText::Message {
                                content,
                                request_id: ReqId::Id(0),
                                untyped: false,
                            },
                        )
                    }),
                    &[
                        say(
                            0,
                            ClientText::Message {
                                content: MsgContent::Object,
                                request_id: ReqId::Numeric,
                                untyped: true,
                            },
                        ),
                        say(
                            0,
                            ClientText::Message {
                                content: MsgContent::Number,
                                request_id: ReqId::Id(0),
                                untyped: true,
                            },
                        ),
                    ],
                ],
            ),
            |s| s.bad_inputs == 5 && s.requests == 1,
        ),
        (
            "seed-message-before-handshake",
            sv(r, &[&[connect(0), msg(0, ReqId::Id(0))], &open(0, 2)[1..]]),
            |s| s.requests == 0 && s.hello_oks == 1,
        ),
        (
            "seed-resync-v2",
            sv(
                r,
                &[
                    &open(0, 2),
                    &publish(4),
                    &[say(0, ClientText::Resync(Since::Rel(-3)))],
                    &publish(1),
                ],
            ),
            |s| s.replays == 3 && s.replay_ends == 2 && s.live == 5,
        ),
        (
            "seed-resync-lost-and-bad",
            sv(
                ServerSetup { ring: 1, ..r },
                &[
                    &open(0, 2),
                    &publish(5),
                    &[
                        say(0, ClientText::Resync(Since::Rel(-5))),
                        say(0, ClientText::Resync(Since::Negative)),
                        say(1, ClientText::Resync(Since::Rel(0))),
                    ],
                ],
            ),
            |s| s.replays == 3 && s.replay_ends == 2 && s.bad_inputs == 1,
        ),
        (
            "seed-resync-v1-ignored",
            sv(
                r,
                &[
                    &open(0, 1),
                    &publish(2),
                    &[say(0, ClientText::Resync(Since::Rel(-2)))],
                ],
            ),
            |s| s.replays == 0 && s.replay_ends == 0,
        ),
        (
            "seed-leave-rejoin-ping-abort",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[
                        say(0, ClientText::Ping),
                        say(0, ClientText::Abort),
                        say(0, ClientText::Leave),
                        say(0, ClientText::Leave),
                        hello_on(0, 2, Known(0), Since::Rel(0)),
                        hello_on(0, 2, SessionRef::Unknown, Since::None),
                    ],
                ],
            ),
            |s| s.hello_oks == 3 && s.resumed == 1 && s.created == 2,
        ),
        (
            "seed-broadcast",
            sv(r, &[&open(0, 2), &open(1, 1), &[connect(2), Broadcast]]),
            |s| s.created == 2 && s.closes.is_empty(),
        ),
        (
            "seed-disconnect-graceful",
            sv(
                ServerSetup {
                    auto_ack: false,
                    window: 0,
                    ..r
                },
                &[
                    &open(0, 2),
                    &publish(2),
                    &[Disconnect { conn: 0 }, Disconnect { conn: 4 }],
                ],
            ),
            |s| s.closes_with(1000) == 1 && s.live == 2,
        ),
        (
            "seed-shutdown-then-connect",
            sv(r, &[&open(0, 2), &publish(1), &[Shutdown, connect(1)]]),
            |s| s.closes_with(1001) == 2 && s.rejected == 1,
        ),
        (
            "seed-restore-latest-resume",
            sv(
                r,
                &[
                    &open(0, 2),
                    &publish(3),
                    &[Restore(RestoreFrom::Latest)],
                    &resume(0, 2, Since::Rel(-1)),
                ],
            ),
            |s| s.restores == 1 && s.resumed == 1 && s.replays == 1,
        ),
        (
            "seed-lossy-restore-resend",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[msg(0, ReqId::Id(0)), Snapshot, msg(0, ReqId::Id(1))],
                    &publish(2),
                    &[Restore(RestoreFrom::Saved(0))],
                    &resume(0, 2, Since::Rel(0)),
                    &[msg(0, ReqId::Id(1)), msg(0, ReqId::Id(0))],
                ],
            ),
            |s| s.lossy_restores == 1 && s.requests == 3 && s.duplicates == 1,
        ),
        (
            "seed-restore-empty",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[Restore(RestoreFrom::Empty)],
                    &resume(0, 2, Since::Rel(0)),
                ],
            ),
            |s| s.created == 2 && s.resumed == 0 && s.restores == 0,
        ),
        (
            "seed-shutdown-snapshot-restore",
            sv(
                r,
                &[
                    &open(0, 1),
                    &publish(2),
                    &[Shutdown, Snapshot, Closed { conn: 0 }],
                    &[Restore(RestoreFrom::Saved(0))],
                    &resume(1, 1, Since::Rel(-2)),
                ],
            ),
            |s| s.resumed == 1 && s.replays == 2 && s.closes_with(1001) == 1,
        ),
        (
            "seed-connection-cap",
            sv(
                ServerSetup {
                    connections: 0,
                    ..r
                },
                &[&open(0, 2), &[connect(1), Closed { conn: 1 }], &open(1, 2)],
            ),
            |s| s.closes_with(4029) == 2 && s.hello_oks == 1,
        ),
        (
            "seed-session-cap",
            sv(
                ServerSetup { sessions: 0, ..r },
                &[&open(0, 2), &open(1, 2), &[Closed { conn: 0 }], &open(2, 2)],
            ),
            |s| s.hello_errors == 1 && s.expired == 1 && s.created == 2,
        ),
        (
            "seed-publish-refused",
            sv(
                r,
                &[
                    &[Step::Publish {
                        session: Known(0),
                        kind: fuzz::Publish::Small,
                    }],
                    &open(0, 2),
                    &[
                        fuzz::Publish::ReservedKind,
                        fuzz::Publish::ReservedField,
                        fuzz::Publish::Token,
                        fuzz::Publish::Large,
                    ]
                    .map(|kind| Step::Publish {
                        session: Known(0),
                        kind,
                    }),
                    &[Step::Publish {
                        session: SessionRef::Unknown,
                        kind: fuzz::Publish::Small,
                    }],
                ],
            ),
            |s| s.published == 2 && s.live == 2,
        ),
        (
            "seed-byte-window",
            sv(
                ServerSetup {
                    auto_ack: false,
                    small_bytes: true,
                    ring: 2,
                    window: 3,
                    ..r
                },
                &[
                    &open(0, 2),
                    &(0..4)
                        .flat_map(|_| {
                            [
                                SentAll { conn: 0 },
                                Step::Publish {
                                    session: Known(0),
                                    kind: fuzz::Publish::Large,
                                },
                            ]
                        })
                        .collect::<Vec<_>>(),
                ],
            ),
            |s| s.live == 4 && s.closes.is_empty(),
        ),
        (
            "seed-raw-text",
            sv(
                r,
                &[
                    &open(0, 2),
                    &[
                        RawText {
                            conn: 0,
                            text: r#"{"content":"untyped","request_id":"raw"}"#.into(),
                        },
                        RawText {
                            conn: 0,
                            text: r#"{"type":"hello","agent_id":"echo","since":-1}"#.into(),
                        },
                        RawText {
                            conn: 0,
                            text: r#"{"type":"join","agent_id":"echo","min_version":"x"}"#.into(),
                        },
                    ],
                ],
            ),
            |s| s.requests == 1 && s.bad_inputs == 2,
        ),
    ]
}

#[test]
fn server_seeds_are_committed_and_reach_what_they_claim() {
    let seeds = server_seeds();
    let origin = origin();
    let mut missed = Vec::new();
    for (name, script, check) in &seeds {
        let bytes = script.to_bytes();
        assert_eq!(
            &ServerScript::from_bytes(&bytes),
            script,
            "{name} does not read back"
        );
        let summary = fuzz::run_server(origin, script);
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
    check_seeds(&fuzz_dir("corpus/server"), &named);
}

#[test]
fn server_body_runs_over_its_corpus() {
    let corpus = files(&fuzz_dir("corpus/server"));
    assert!(
        corpus.len() >= server_seeds().len(),
        "server corpus missing"
    );
    let origin = origin();
    for (name, data) in &corpus {
        eprintln!("server {name}");
        fuzz::server_at(origin, data);
    }
}

#[test]
fn server_body_survives_pseudo_random_inputs() {
    let corpus = files(&fuzz_dir("corpus/server"));
    let origin = origin();
    let mut rng = Rng::from_u64(0x5e4e4);
    for _ in 0..3000 {
        let data = mutate(&mut rng, &corpus, 400);
        let outcome = std::panic::catch_unwind(|| drop(fuzz::server_at(origin, &data)));
        if let Err(panic) = outcome {
            panic!(
                "server body panicked: {}\n input: {data:02x?}",
                panic_message(&panic)
            );
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------ sim

mod sim_corpus {
    use std::time::Duration;

    use tether_testkit::fuzz::{self, SimEntry, SimScript};
    use tether_testkit::sim::{Action, Direction, Fault, Restore, RunReport, Target};

    use super::{check_seeds, files, fuzz_dir, mutate, origin, panic_message, Rng};

    type SimCheck = fn(&RunReport) -> bool;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn f(at: u64, fault: Fault) -> (Duration, SimEntry) {
        (ms(at), SimEntry::Fault(fault))
    }

    fn a(at: u64, action: Action) -> (Duration, SimEntry) {
        (ms(at), SimEntry::Action(action))
    }

    fn s(seed: u64, clients: u8, secs: u8, schedule: Vec<(Duration, SimEntry)>) -> SimScript {
        SimScript {
            seed,
            clients,
            secs,
            schedule,
        }
    }

    fn crash(restore: Restore, downtime: u64, graceful: bool) -> Fault {
        Fault::Crash {
            restore,
            downtime: ms(downtime),
            graceful,
        }
    }

    fn burst(client: usize) -> Action {
        Action::Publish { client, count: 16 }
    }

    fn sim_seeds() -> Vec<(&'static str, SimScript, SimCheck)> {
        use Fault::*;
        vec![
            ("sim-no-faults", s(1, 2, 10, vec![]), |r| {
                r.stats.faults == 0 && r.stats.published > 0 && r.stats.lost == 0
            }),
            (
                "sim-cuts",
                s(
                    2,
                    3,
                    10,
                    vec![
                        f(1000, Cut { client: 0 }),
                        f(2000, Cut { client: 1 }),
                        f(3000, Cut { client: 2 }),
                        f(3010, Cut { client: 2 }),
                    ],
                ),
                |r| r.stats.faults == 4 && r.stats.opens >= 6,
            ),
            (
                "sim-half-open-to-server",
                s(
                    3,
                    2,
                    8,
                    vec![f(
                        2000,
                        HalfOpen {
                            client: 0,
                            direction: Direction::ToServer,
                        },
                    )],
                ),
                |r| r.stats.reaped >= 1,
            ),
            (
                "sim-half-open-to-client",
                s(
                    4,
                    2,
                    8,
                    vec![f(
                        2000,
                        HalfOpen {
                            client: 1,
                            direction: Direction::ToClient,
                        },
                    )],
                ),
                |r| r.stats.opens >= 3,
            ),
            (
                "sim-half-open-both-takeover",
                s(
                    5,
                    1,
                    10,
                    vec![f(
                        1000,
                        HalfOpen {
                            client: 0,
                            direction: Direction::Both,
                        },
                    )],
                ),
                |r| r.stats.opens >= 2,
            ),
            (
                "sim-slow-consumer-bursts",
                s(
                    6,
                    2,
                    10,
                    vec![
                        f(
                            1000,
                            Slow {
                                client: 0,
                                extra: ms(1000),
                                duration: ms(6000),
                            },
                        ),
                        a(1500, burst(0)),
                        a(1600, burst(0)),
                        a(1700, burst(0)),
                        a(1800, burst(0)),
                        a(1900, burst(0)),
                    ],
                ),
                |r| r.stats.published >= 80,
            ),
            (
                "sim-persist-then-lossy-restore",
                s(
                    7,
                    2,
                    12,
                    vec![
                        f(2000, Persist),
                        a(2500, burst(0)),
                        a(2600, Action::Send { client: 1 }),
                        f(4000, crash(Restore::Persisted, 500, false)),
                    ],
                ),
                |r| r.stats.faults == 2 && r.stats.sessions_resumed >= 2,
            ),
            (
                "sim-crash-latest",
                s(
                    8,
                    3,
                    10,
                    vec![
                        a(1000, Action::Send { client: 0 }),
                        f(1100, crash(Restore::Latest, 0, false)),
                    ],
                ),
                |r| r.stats.sessions_resumed >= 3 && r.stats.resets == 0,
            ),
            (
                "sim-crash-empty",
                s(9, 2, 10, vec![f(3000, crash(Restore::Empty, 3000, false))]),
                |r| r.stats.replaced + r.stats.resets >= 1,
            ),
            (
                "sim-graceful-shutdown",
                s(
                    10,
                    2,
                    10,
                    vec![
                        a(2900, burst(1)),
                        f(3000, crash(Restore::Latest, 500, true)),
                    ],
                ),
                |r| r.stats.sessions_resumed >= 2,
            ),
            (
                "sim-persisted-without-persist",
                s(11, 2, 8, vec![f(2000, crash(Restore::Persisted, 0, true))]),
                |r| r.stats.replaced + r.stats.resets >= 1,
            ),
            (
                "sim-clock-jump-past-ttl",
                s(12, 2, 10, vec![f(2000, ClockJump(ms(120_000)))]),
                |r| r.elapsed >= ms(120_000),
            ),
            (
                "sim-freeze-server",
                s(
                    13,
                    2,
                    10,
                    vec![f(
                        2000,
                        Freeze {
                            target: Target::Server,
                            duration: ms(5000),
                        },
                    )],
                ),
                |r| r.stats.faults == 1 && r.elapsed >= Duration::from_secs(10),
            ),
            (
                "sim-freeze-client",
                s(
                    14,
                    2,
                    10,
                    vec![f(
                        2000,
                        Freeze {
                            target: Target::Client(0),
                            duration: ms(6000),
                        },
                    )],
                ),
                |r| r.stats.faults == 1,
            ),
            (
                "sim-restart-client",
                s(
                    15,
                    2,
                    10,
                    vec![
                        a(1900, Action::Send { client: 1 }),
                        f(2000, RestartClient { client: 1 }),
                        f(5000, RestartClient { client: 0 }),
                    ],
                ),
                |r| r.stats.sessions_resumed >= 2,
            ),
            (
                "sim-requests-across-crashes",
                s(
                    16,
                    2,
                    12,
                    vec![
                        a(1000, Action::Send { client: 0 }),
                        a(1000, Action::Send { client: 1 }),
                        f(1050, Persist),
                        a(1100, Action::Send { client: 0 }),
                        f(1150, crash(Restore::Latest, 0, false)),
                        a(3000, Action::Send { client: 1 }),
                        f(3020, crash(Restore::Persisted, 500, false)),
                    ],
                ),
                |r| r.stats.requests_to_app >= 4,
            ),
            (
                "sim-disconnect",
                s(
                    17,
                    3,
                    8,
                    vec![
                        a(1000, Action::Disconnect { client: 2 }),
                        a(1100, Action::Send { client: 2 }),
                        f(1200, Cut { client: 2 }),
                    ],
                ),
                |r| r.stats.faults == 1,
            ),
            (
                "sim-cut-during-replay",
                s(
                    18,
                    1,
                    10,
                    vec![
                        f(1000, Cut { client: 0 }),
                        a(1010, burst(0)),
                        a(1020, burst(0)),
                        f(1500, Cut { client: 0 }),
                        a(1510, burst(0)),
                    ],
                ),
                |r| r.stats.published >= 48,
            ),
            (
                "sim-two-crashes-in-a-row",
                s(
                    19,
                    2,
                    10,
                    vec![
                        f(2000, crash(Restore::Latest, 0, true)),
                        f(2000, crash(Restore::Latest, 0, false)),
                        f(2010, crash(Restore::Empty, 0, false)),
                    ],
                ),
                |r| r.stats.faults == 3,
            ),
            (
                "sim-kitchen-sink",
                s(
                    20,
                    3,
                    30,
                    vec![
                        f(1000, Cut { client: 0 }),
                        f(
                            2000,
                            HalfOpen {
                                client: 1,
                                direction: Direction::ToClient,
                            },
                        ),
                        f(
                            3000,
                            Slow {
                                client: 2,
                                extra: ms(2000),
                                duration: ms(8000),
                            },
                        ),
                        a(3500, burst(2)),
                        f(5000, Persist),
                        f(7000, crash(Restore::Persisted, 500, false)),
                        f(9000, ClockJump(ms(8000))),
                        f(
                            11_000,
                            Freeze {
                                target: Target::Client(1),
                                duration: ms(4000),
                            },
                        ),
                        f(13_000, RestartClient { client: 0 }),
                        f(15_000, crash(Restore::Latest, 3000, true)),
                        a(16_000, Action::Send { client: 2 }),
                        f(20_000, crash(Restore::Empty, 0, false)),
                    ],
                ),
                |r| r.stats.faults == 10,
            ),
            (
                "sim-broadcast-across-a-crash",
                s(
                    21,
                    3,
                    12,
                    vec![
                        a(1000, Action::Broadcast { count: 16 }),
                        f(1500, Cut { client: 1 }),
                        a(1600, Action::Broadcast { count: 16 }),
                        f(3000, Persist),
                        a(3500, Action::Broadcast { count: 8 }),
                        f(4000, crash(Restore::Latest, 500, false)),
                        a(5000, Action::Broadcast { count: 8 }),
                    ],
                ),
                |r| r.stats.faults == 3 && r.stats.published >= 48 * 3,
            ),
        ]
    }

    #[test]
    fn sim_seeds_are_committed_and_reach_what_they_claim() {
        let seeds = sim_seeds();
        let origin = origin();
        let mut missed = Vec::new();
        for (name, script, check) in &seeds {
            let bytes = script.to_bytes();
            assert_eq!(
                &SimScript::from_bytes(&bytes),
                script,
                "{name} does not read back"
            );
            let report = fuzz::sim_at(origin, &bytes);
            if !check(&report) {
                missed.push(format!("{name}: {report:?}"));
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
        check_seeds(&fuzz_dir("corpus/sim"), &named);
    }

    #[test]
    fn sim_body_runs_over_its_corpus() {
        let corpus = files(&fuzz_dir("corpus/sim"));
        assert!(corpus.len() >= sim_seeds().len(), "sim corpus missing");
        let origin = origin();
        for (name, data) in &corpus {
            eprintln!("sim {name}");
            fuzz::sim_at(origin, data);
        }
    }

    #[test]
    fn sim_body_survives_pseudo_random_inputs() {
        let corpus = files(&fuzz_dir("corpus/sim"));
        let origin = origin();
        let mut rng = Rng::from_u64(0x51_3eed);
        for _ in 0..200 {
            let data = mutate(&mut rng, &corpus, 120);
            let outcome = std::panic::catch_unwind(|| {
                let _ = fuzz::sim_at(origin, &data);
            });
            if let Err(panic) = outcome {
                panic!(
                    "sim body panicked: {}\n input: {data:02x?}",
                    panic_message(&panic)
                );
            }
        }
    }
}
