//! A conformance suite for gateways that speak the PraisonAI gateway protocol (v1) or tether's
//! v2: [`check`] runs every check against a server and returns a [`Report`] with one row per
//! check — pass, fail (with the frames sent and received as evidence) or not applicable (with
//! the reason). `tether check` is this function on the command line.
//!
//! The checks speak raw frames over a WebSocket, so they see exactly what the server does;
//! one of them drives tether's own client through a fault proxy. Checks that need the server
//! to publish events use a control hook ([`Control`]); without one they are reported not
//! applicable, never passed. The sections named in each row are those of `PROTOCOL.md` (v1)
//! and `docs/PROTOCOL-v2.md`.
//!
//! In your own tests:
//!
//! ```no_run
//! # async fn run() -> Result<(), tether_testkit::check::CheckError> {
//! use tether_testkit::check::{check, Control, Options};
//!
//! let options = Options {
//!     token: Some("secret".into()),
//!     control: Some(Control::Tether("127.0.0.1:9001".into())),
//!     ..Options::default()
//! };
//! let report = check("ws://127.0.0.1:8765/ws", &options).await?;
//! assert!(report.passed(), "{report}");
//! # Ok(()) }
//! ```

pub mod control;
mod probe;
mod report;
mod suite;

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use probe::{Frame, Got, Probe, Transcript};

pub use control::Control;
pub use report::{CheckResult, Report, Status};

/// What [`check`] needs to know about the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The token (`?token=`); `None` for a server without authentication.
    pub token: Option<String>,
    /// The agent to talk to (default `echo`).
    pub agent_id: String,
    /// Another agent the server knows, for the ownership check (default: a made-up id,
    /// which servers that accept any agent id take).
    pub other_agent: Option<String>,
    /// A token of another principal, for the ownership check (n/a without one).
    pub other_token: Option<String>,
    /// Where events come from (n/a for the checks that need events without one).
    pub control: Option<Control>,
    /// Speak only this version (e.g. `Some(1)` checks a v2 server's v1 behaviour); `None`
    /// offers 1..=2 and speaks what the server picks.
    pub protocol: Option<u32>,
    /// The longest the suite waits for a server timer (pings, reaping): checks that would
    /// need longer are not applicable.
    pub wait: Duration,
    /// Run only the checks whose id starts with one of these (all when empty).
    pub only: Vec<String>,
    /// Most events the window check publishes looking for the end of the replay window.
    pub window_budget: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            agent_id: "echo".into(),
            other_agent: None,
            other_token: None,
            control: None,
            protocol: None,
            wait: Duration::from_secs(5),
            only: Vec::new(),
            window_budget: 8192,
        }
    }
}

/// Why the suite could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The URL is not a `ws://` or `wss://` URL: fix it (e.g. `ws://127.0.0.1:8765/ws`).
    #[error("{0}")]
    Url(#[from] tether_driver::UrlError),
    /// No WebSocket connection could be made: is the server running, on that path?
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server refused the suite's first handshake: check the token, the agent id and the
    /// protocol version.
    #[error("the server refused the handshake: {code}: {message}")]
    Rejected {
        /// `hello_error.code`.
        code: String,
        /// `hello_error.message`.
        message: String,
    },
    /// `protocol` is neither 1 nor 2.
    #[error("protocol {0} is not one tether speaks (1 or 2)")]
    Protocol(u32),
    /// The control hook does not answer: check its address (and, for tether's, the token).
    #[error("the control hook at {addr} does not answer: {reason}")]
    Control {
        /// Its address.
        addr: String,
        /// What happened.
        reason: String,
    },
}

/// Runs the suite against the gateway at `url` (e.g. `ws://127.0.0.1:8765/ws`).
pub async fn check(url: &str, options: &Options) -> Result<Report, CheckError> {
    let started = Instant::now();
    tether_driver::with_token(url, options.token.as_deref())?;
    let offer = match options.protocol {
        None => (1, 2),
        Some(v @ 1..=2) => (v, v),
        Some(v) => return Err(CheckError::Protocol(v)),
    };
    let log = Transcript::default();
    let producer = options
        .control
        .clone()
        .map(|c| control::Producer::new(c, options.token.clone(), log.clone()));
    let mut ctx = Ctx {
        url: url.to_owned(),
        options: options.clone(),
        offer,
        version: offer.1,
        policy: Value::Null,
        producer,
        log,
        opened: 0,
        requests: 0,
    };
    ctx.preflight().await?;
    let mut results = Vec::new();
    for def in suite::all() {
        if !options.only.is_empty() && !options.only.iter().any(|p| def.id.starts_with(p)) {
            continue;
        }
        ctx.opened = 0;
        let begun = Instant::now();
        let outcome = tokio::time::timeout(def.limit, (def.run)(&mut ctx)).await;
        let (status, detail) = match outcome {
            Ok(Ok(detail)) => (Status::Pass, detail),
            Ok(Err(Finding::Fail(why))) => (Status::Fail, why),
            Ok(Err(Finding::NotApplicable(why))) => (Status::NotApplicable, why),
            Err(_) => (
                Status::Fail,
                format!("the check did not finish within {} s", def.limit.as_secs()),
            ),
        };
        let transcript = ctx.log.take();
        results.push(CheckResult {
            id: def.id,
            section: def.section,
            title: def.title,
            status,
            detail,
            evidence: if status == Status::Fail {
                transcript
            } else {
                Vec::new()
            },
            elapsed: begun.elapsed(),
        });
    }
    Ok(Report {
        url: url.to_owned(),
        protocol: ctx.version,
        producer: options.control.as_ref().map(Control::describe),
        results,
        elapsed: started.elapsed(),
    })
}

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finding {
    /// The server did something else than the protocol asks.
    Fail(String),
    /// The check cannot be run against this server.
    NotApplicable(String),
}

/// What a check returns: the detail of a pass, or why it did not pass.
pub(crate) type Step<T = String> = Result<T, Finding>;

/// Fails with `why` unless `ok`.
pub(crate) fn ensure(ok: bool, why: impl FnOnce() -> String) -> Step<()> {
    if ok {
        Ok(())
    } else {
        Err(Finding::Fail(why()))
    }
}

/// How long the suite waits for a reply the server should send at once.
pub(crate) const REPLY: Duration = Duration::from_secs(5);

/// A session a check opened: its id and the `hello_ok` that opened it.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) hello_ok: Frame,
}

impl Session {
    /// The head cursor `hello_ok` reported.
    pub(crate) fn cursor(&self) -> u64 {
        self.hello_ok.get("cursor").as_u64().unwrap_or(0)
    }
}

/// What the checks share: the server, the options, the version spoken, the producer and the
/// transcript of the running check.
pub(crate) struct Ctx {
    url: String,
    pub(crate) options: Options,
    /// The range offered in every handshake (negotiation checks write their own).
    pub(crate) offer: (u32, u32),
    /// The version the server picked for `offer`.
    pub(crate) version: u32,
    /// `hello_ok.policy` of the first handshake.
    pub(crate) policy: Value,
    producer: Option<control::Producer>,
    pub(crate) log: Transcript,
    /// Connections opened by the running check (they are named A, B, C...).
    opened: u32,
    requests: u64,
}

impl Ctx {
    /// The first handshake: can the suite talk to this server at all, and in which version?
    async fn preflight(&mut self) -> Result<(), CheckError> {
        let url = self.url.clone();
        let unreachable = |reason: String| CheckError::Unreachable {
            url: url.clone(),
            reason,
        };
        let mut a = self.open().await.map_err(|f| unreachable(finding(f)))?;
        let hello = self.hello(json!({}));
        a.send(&hello).await.map_err(|f| unreachable(finding(f)))?;
        let reply = a
            .frame(REPLY, "handshake reply")
            .await
            .map_err(|f| unreachable(finding(f)))?;
        if reply.ty() != "hello_ok" {
            return Err(CheckError::Rejected {
                code: reply.get("code").as_str().unwrap_or(reply.ty()).to_owned(),
                message: reply.get("message").as_str().unwrap_or("").to_owned(),
            });
        }
        self.version = reply.get("protocol").as_u64().unwrap_or(1) as u32;
        self.policy = reply.get("policy").clone();
        a.close().await;
        if let Some(p) = &self.producer {
            // A harmless command: an unknown session must be refused (or ignored), not hang.
            let probe = control::ControlCommand {
                cmd: "publish".into(),
                token: match p.control() {
                    Control::Tether(_) => self.options.token.clone(),
                    Control::PraisonAi(_) => None,
                },
                session_id: Some("tether-check-no-such-session".into()),
                count: 1,
                kind: "message".into(),
                data: Map::new(),
            };
            let reply = p.send(&probe).await.map_err(|reason| CheckError::Control {
                addr: p.control().addr().to_owned(),
                reason,
            })?;
            if reply.error.as_deref().is_some_and(|e| e.contains("token")) {
                return Err(CheckError::Control {
                    addr: p.control().addr().to_owned(),
                    reason: reply.error.unwrap_or_default(),
                });
            }
        }
        self.log.take();
        Ok(())
    }

    /// The server's URL (without the token).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A new connection with the options' token.
    pub(crate) async fn open(&mut self) -> Step<Probe> {
        let token = self.options.token.clone();
        self.open_with(token.as_deref()).await
    }

    /// A new connection with `token`.
    pub(crate) async fn open_with(&mut self, token: Option<&str>) -> Step<Probe> {
        let name = char::from(b'A' + (self.opened % 26) as u8).to_string();
        self.opened += 1;
        let url = tether_driver::with_token(&self.url, token)
            .map_err(|e| Finding::Fail(e.to_string()))?;
        let shown = match token {
            Some(_) => format!("{} (with a token)", self.url),
            None => format!("{} (no token)", self.url),
        };
        Probe::open(name, &url, &shown, self.log.clone()).await
    }

    /// A `hello` offering the suite's range, with `extra` fields merged in (a `null` removes
    /// a field).
    pub(crate) fn hello(&self, extra: Value) -> Value {
        let mut hello = json!({
            "type": "hello",
            "agent_id": self.options.agent_id,
            "protocol_min": self.offer.0,
            "protocol_max": self.offer.1,
            "capabilities": ["streaming"],
        });
        if let (Some(h), Value::Object(extra)) = (hello.as_object_mut(), extra) {
            for (k, v) in extra {
                if v.is_null() {
                    h.remove(&k);
                } else {
                    h.insert(k, v);
                }
            }
        }
        hello
    }

    /// Sends `hello` on `probe` and returns the first frame that answers it.
    pub(crate) async fn handshake(&mut self, probe: &mut Probe, hello: Value) -> Step<Frame> {
        probe.send(&hello).await?;
        probe.frame(REPLY, "handshake reply").await
    }

    /// A `hello` with `extra` on a new connection, which is then closed: the first thing that
    /// answers it, a frame or the end of the connection.
    pub(crate) async fn hello_once(&mut self, extra: Value) -> Step<Got> {
        let mut probe = self.open().await?;
        probe.send(&self.hello(extra)).await?;
        let got = probe.recv(REPLY, "handshake reply").await?;
        probe.close().await;
        Ok(got)
    }

    /// [`Ctx::hello_once`]'s frame; the connection ending instead is a failure.
    pub(crate) async fn hello_reply(&mut self, extra: Value) -> Step<Frame> {
        match self.hello_once(extra).await? {
            Got::Frame(f) => Ok(f),
            Got::Ended(e) => Err(Finding::Fail(format!(
                "no handshake reply, the connection ended: {e}"
            ))),
        }
    }

    /// A connection with a new session.
    pub(crate) async fn start(&mut self) -> Step<(Probe, Session)> {
        let mut probe = self.open().await?;
        let hello = self.hello(json!({}));
        let reply = self.handshake(&mut probe, hello).await?;
        let session = accepted(reply)?;
        if session.hello_ok.get("protocol").as_u64() >= Some(2) {
            // v2 ends every handshake's replay, even an empty one, with `replay_end`.
            probe
                .until(REPLY, "replay_end", |f| f.ty() == "replay_end")
                .await?;
        }
        Ok((probe, session))
    }

    /// A connection resuming `session` after `since`.
    pub(crate) async fn resume(
        &mut self,
        session: &str,
        since: Option<u64>,
    ) -> Step<(Probe, Session)> {
        let mut probe = self.open().await?;
        let hello = self.hello(json!({"session_id": session, "since": since}));
        let reply = self.handshake(&mut probe, hello).await?;
        let resumed = accepted(reply)?;
        Ok((probe, resumed))
    }

    /// A fresh request id.
    pub(crate) fn request_id(&mut self) -> String {
        self.requests += 1;
        format!("tether-check-{}-{}", std::process::id(), self.requests)
    }

    /// The producer, or n/a.
    pub(crate) fn producer(&self) -> Step<control::Producer> {
        self.producer.clone().ok_or_else(|| {
            Finding::NotApplicable(
                "needs events from the server: give a control hook (--control or \
                 --praisonai-control)"
                    .into(),
            )
        })
    }

    /// Whether a producer is configured.
    pub(crate) fn has_producer(&self) -> bool {
        self.producer.is_some()
    }

    /// N/a unless the suite speaks v2.
    pub(crate) fn v2_only(&self) -> Step<()> {
        if self.version >= 2 {
            Ok(())
        } else {
            Err(Finding::NotApplicable(format!(
                "v2 only (the suite speaks v{} with this server)",
                self.version
            )))
        }
    }

    /// `policy.heartbeat_ms`, or n/a when pings are off or slower than the suite may wait.
    pub(crate) fn heartbeat(&self, periods: u32) -> Step<Duration> {
        let ms = self.policy["heartbeat_ms"].as_u64().unwrap_or(0);
        if ms == 0 {
            return Err(Finding::NotApplicable(
                "the server advertises no heartbeat (policy.heartbeat_ms is 0 or absent)".into(),
            ));
        }
        let beat = Duration::from_millis(ms);
        let needed = beat * periods + Duration::from_secs(1);
        if needed > self.options.wait {
            return Err(Finding::NotApplicable(format!(
                "heartbeat_ms {ms} needs up to {} ms, more than the suite may wait ({} ms; \
                 raise --wait or run the server with a shorter heartbeat)",
                needed.as_millis(),
                self.options.wait.as_millis()
            )));
        }
        Ok(beat)
    }

    /// Writes a note to the transcript.
    pub(crate) fn note(&self, line: String) {
        self.log.push(line);
    }

    /// Makes `n` or more tracked events in `session` and reads them live on `probe`: published
    /// through the producer when there is one, else as the responses to requests (two each).
    /// Returns their sequence numbers as received.
    pub(crate) async fn events(
        &mut self,
        probe: &mut Probe,
        session: &str,
        n: u32,
    ) -> Step<Vec<u64>> {
        if let Some(p) = self.producer.clone() {
            let cursors = p.publish(session, n, Map::new()).await?;
            let Some(Some(last)) = cursors.last().copied() else {
                return Err(Finding::Fail(format!(
                    "the server did not record the events published to a connected session \
                     (cursors {cursors:?})"
                )));
            };
            return live_until(probe, last).await;
        }
        let requests = n.div_ceil(2);
        for i in 0..requests {
            let id = self.request_id();
            probe
                .send(&json!({"type": "message", "content": format!("tether check {i}"), "request_id": id}))
                .await?;
        }
        let mut seqs = Vec::new();
        let mut finals = 0;
        while finals < requests {
            let f = probe
                .until(REPLY, "the responses to the requests", |f| {
                    f.is_live_event()
                })
                .await?;
            seqs.extend(f.seq());
            if f.ty() == "response" && f.status() == "final" {
                finals += 1;
            }
        }
        Ok(seqs)
    }
}

/// Tracked frames on `probe` until the one with sequence `last`; their sequence numbers.
pub(crate) async fn live_until(probe: &mut Probe, last: u64) -> Step<Vec<u64>> {
    let mut seqs = Vec::new();
    loop {
        let f = probe
            .until(REPLY, &format!("the event with seq {last}"), |f| {
                f.seq().is_some()
            })
            .await?;
        let seq = f.seq().unwrap_or(0);
        seqs.push(seq);
        if seq >= last {
            return Ok(seqs);
        }
    }
}

/// The session of a `hello_ok`, or a failure naming what came instead.
pub(crate) fn accepted(reply: Frame) -> Step<Session> {
    if reply.ty() != "hello_ok" {
        return Err(Finding::Fail(format!(
            "expected hello_ok, got {}",
            probe::trim(&reply.text)
        )));
    }
    let id = reply
        .get("session_id")
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Finding::Fail("hello_ok has no session_id".into()))?
        .to_owned();
    Ok(Session {
        id,
        hello_ok: reply,
    })
}

/// A finding as one line (for the preflight's errors).
fn finding(f: Finding) -> String {
    match f {
        Finding::Fail(s) | Finding::NotApplicable(s) => s,
    }
}

/// Replay frames on `probe` until `last` (inclusive); their sequence numbers. Other frames
/// in between are a failure (nothing may interleave with a replay).
pub(crate) async fn replays_until(probe: &mut Probe, last: u64) -> Step<Vec<u64>> {
    let mut seqs = Vec::new();
    while seqs.last().is_none_or(|s| *s < last) {
        let f = probe
            .frame(REPLY, &format!("the replay of seq {last}"))
            .await?;
        if !f.is_replay() {
            return Err(Finding::Fail(format!(
                "expected the replays up to seq {last}, got {} after {seqs:?}",
                probe::trim(&f.text)
            )));
        }
        seqs.push(f.seq().ok_or_else(|| {
            Finding::Fail(format!(
                "a replay without a sequence: {}",
                probe::trim(&f.text)
            ))
        })?);
    }
    Ok(seqs)
}
