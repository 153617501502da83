//! Client fuzz scripts: typed inputs, a tiny byte reader (any bytes are a script) and its
//! inverse writer (seeds are written as typed inputs, so every seed byte means what it says).
//!
//! # Encoding
//! A script is a [`Setup`] header followed by inputs until the bytes run out; a read past the
//! end gives zeros. Each input starts with an opcode byte taken modulo the number of [`Input`]
//! variants (in declaration order), followed by its fields. Numbers are little-endian.
//!
//! * [`Num`]: one byte `t`; `t < 0xF0` is `Rel((t % 32) − 8)`, else `Abs` of the next 8 bytes.
//! * `Option<u64>`: one byte `t`; 0 is `None`, `1..=0xEF` is `Some(t − 1)`, else `Some` of the
//!   next 8 bytes.
//! * enums without fields: one byte, modulo the number of variants.

use std::time::Duration;

/// A number the server puts in a frame (sequence, cursor), mostly relative to the client's last
/// in-order sequence, so that small mutations give in-order frames, duplicates and small gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Num {
    /// The client's last in-order sequence (0 before any) plus this, saturating; `-8..=23`.
    Rel(i8),
    /// This exact value.
    Abs(u64),
}

impl Num {
    /// The next in-order sequence.
    pub const NEXT: Self = Self::Rel(1);
    /// The last in-order sequence: a duplicate, or "nothing missed" as a handshake head.
    pub const SAME: Self = Self::Rel(0);

    /// The value against `base`, the client's last in-order sequence.
    pub fn resolve(self, base: u64) -> u64 {
        match self {
            Self::Rel(delta) => base.saturating_add_signed(delta.into()),
            Self::Abs(value) => value,
        }
    }
}

/// The unit of a [`Input::Wait`] step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Secs,
    /// Hours.
    Hours,
}

impl TimeUnit {
    /// `amount` of this unit.
    pub fn duration(self, amount: u16) -> Duration {
        let amount = u64::from(amount);
        match self {
            Self::Micros => Duration::from_micros(amount),
            Self::Millis => Duration::from_millis(amount),
            Self::Secs => Duration::from_secs(amount),
            Self::Hours => Duration::from_secs(amount * 3600),
        }
    }
}

/// Message content for [`Input::Send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// A short string.
    Text,
    /// `""`: refused with `EmptyContent`.
    Empty,
    /// `null`: refused with `EmptyContent`.
    Null,
    /// A number.
    Number,
    /// An object.
    Object,
}

/// The type of a live tracked frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveKind {
    /// A server-pushed `message`.
    Message,
    /// A `token_stream` chunk.
    Token,
    /// A tracked `error` (errors consume sequence numbers).
    Error,
    /// A `response` to one of the requests sent so far.
    Response {
        /// Index (modulo their number) into the most recent request ids (0..=7).
        request: u8,
        /// 0 `accepted`, 1 `final`, 2 `duplicate`, 3 `final` without `request_id` (v1).
        status: u8,
    },
}

/// Which of `cursor` and `seq` a live tracked frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Both, equal (what every conforming server sends).
    Both,
    /// Only `seq`.
    SeqOnly,
    /// Only `cursor`.
    CursorOnly,
    /// Both, `cursor` set apart from `seq` (a non-conforming server).
    Split(Num),
}

/// How a `replay` frame carries its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayPath {
    /// Hello path: `event.sequence`.
    Hello,
    /// Join path: top-level `seq`, no `event.sequence`.
    Join,
    /// Only inside `event.data` (`cursor`/`seq` of the original frame).
    Inner,
    /// Nowhere: a bad frame.
    NoSeq,
    /// `event.data` is not an object: a bad frame.
    BadData,
}

/// An untracked `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No code (a server that predates `hello` answers so): the client falls back to `join`.
    Bare,
    /// `configuration_error` "Unknown frame type" (the core codec's answer to `hello`).
    UnknownType,
    /// `version_unsupported` with `server_min_version` 2.
    VersionUnsupported,
    /// `auth_required`.
    AuthRequired,
    /// A code this version does not know.
    NewCode,
}

/// Malformed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garbage {
    /// The empty string.
    Empty,
    /// Truncated JSON.
    Truncated,
    /// An array.
    Array,
    /// `null`.
    Null,
    /// A number as `type`.
    NumericType,
    /// Negative cursor and seq.
    NegativeSeq,
    /// A float seq.
    FloatSeq,
    /// A seq above `u64::MAX`.
    HugeSeq,
    /// No `type`.
    Untyped,
    /// Nesting beyond serde_json's recursion limit.
    Deep,
}

/// A text frame from the server, built from a realistic template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerText {
    /// `hello_ok`.
    HelloOk {
        /// Negotiated version: one of 1, 2, 0, 3.
        protocol: u32,
        /// Session `s0`..`s3`.
        session: u8,
        /// `resumed`.
        resumed: bool,
        /// The head `cursor`.
        cursor: Num,
        /// v2 `sequence`.
        sequence: Option<Num>,
        /// `policy.heartbeat_ms`.
        heartbeat_ms: Option<u64>,
        /// `resync_required`.
        resync_required: bool,
    },
    /// Legacy `joined`.
    Joined {
        /// Session `s0`..`s3`.
        session: u8,
        /// The head `cursor`.
        cursor: Num,
        /// `sequence`.
        sequence: Option<Num>,
        /// `protocol_version`: one of 1, 2, 0, 3.
        protocol_version: Option<u32>,
        /// `resync_required`.
        resync_required: bool,
    },
    /// A live tracked frame.
    Live {
        /// Its type.
        kind: LiveKind,
        /// Its `seq` (and `cursor`, per `shape`).
        seq: Num,
        /// Which fields it carries.
        shape: Shape,
    },
    /// A `replay` of a `message`.
    Replay {
        /// Its sequence.
        seq: Num,
        /// Where the sequence is.
        path: ReplayPath,
    },
    /// tether's `replay_end`, with the head `cursor` or without.
    ReplayEnd {
        /// The head.
        cursor: Option<Num>,
    },
    /// `ping`.
    Ping,
    /// `pong`.
    Pong,
    /// `hello_error`.
    HelloError {
        /// Index (modulo their number) into the known codes followed by one unknown code.
        code: u8,
        /// 0: no `next_step`; else an index (modulo their number) into the known steps, plus 1.
        next_step: u8,
        /// `retry_after_seconds`.
        retry_after: Option<u64>,
    },
    /// An untracked `error`.
    Error(ErrorKind),
    /// A `snapshot`.
    Snapshot,
    /// An untracked `status` notice.
    Notice,
    /// Something malformed.
    Garbage(Garbage),
}

impl ServerText {
    /// A fresh `hello_ok` for session `s{session}` at version `protocol`, head 0.
    pub fn hello_ok(protocol: u32, session: u8) -> Self {
        Self::HelloOk {
            protocol,
            session,
            resumed: false,
            cursor: Num::Abs(0),
            sequence: None,
            heartbeat_ms: None,
            resync_required: false,
        }
    }

    /// A live `message` with `cursor` = `seq`.
    pub fn live(seq: Num) -> Self {
        Self::Live {
            kind: LiveKind::Message,
            seq,
            shape: Shape::Both,
        }
    }
}

/// One input to the client machine (or to the clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Advance `now` (never calls the machine).
    Wait {
        /// How many units.
        amount: u16,
        /// Which unit.
        unit: TimeUnit,
    },
    /// `handle_timeout(now)`, due or not.
    Timeout,
    /// Advance `now` to `poll_timeout()` if that is later, then `handle_timeout(now)`.
    FireTimer,
    /// `handle_connected`.
    Connected,
    /// `handle_connect_failed`.
    ConnectFailed,
    /// `handle_closed` with this code.
    Closed(Option<u16>),
    /// `handle_binary`.
    Binary,
    /// `handle_text` with a templated frame.
    Text(ServerText),
    /// `handle_text` with these characters (at most 255 bytes).
    RawText(String),
    /// `send`.
    Send(Content),
    /// `send_with_id` with id `req-0`..`req-3`.
    SendWithId(u8, Content),
    /// `disconnect`.
    Disconnect,
    /// `credentials_refreshed`.
    CredentialsRefreshed,
}

/// A persisted resume state to start from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeSeed {
    /// Session `s0`..`s3`.
    pub session: u8,
    /// Saved cursor.
    pub cursor: Option<u64>,
    /// Saved sequence.
    pub sequence: Option<u64>,
    /// Saved unresolved requests `saved-0`.. (0..=3).
    pub pending: u8,
}

/// The client's configuration, and where it starts. All zeros are the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Setup {
    /// Open with the legacy `join` handshake.
    pub join: bool,
    /// Report live gaps as lost instead of repairing them.
    pub no_repair: bool,
    /// Resolve unanswered requests as ambiguous instead of resending them.
    pub no_resend: bool,
    /// Fallback heartbeat interval, in units of 100 ms, minus one.
    pub heartbeat: Option<u8>,
    /// Give up after this many failed attempts (0..=7).
    pub max_attempts: Option<u8>,
    /// Give up after this many seconds of outage.
    pub max_elapsed_secs: Option<u8>,
    /// Refuse inbound frames above 240 bytes.
    pub small_frames: bool,
    /// Offered versions: 0 = 1..=2, 1 = 1..=1, 2 = 2..=2, 3 = 1..=3.
    pub versions: u8,
    /// Backoff jitter: 0 proportional, 1 none, 2 full, 3 decorrelated.
    pub jitter: u8,
    /// Outbox capacity: 16 minus this (0..=15).
    pub outbox: u8,
    /// The client's PRNG seed.
    pub seed: u8,
    /// Start from a persisted resume state.
    pub resume: Option<ResumeSeed>,
}

/// A client fuzz script: a setup and inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    /// Configuration and starting point.
    pub setup: Setup,
    /// Inputs, in order.
    pub inputs: Vec<Input>,
}

const PROTOCOLS: [u32; 4] = [1, 2, 0, 3];

impl Script {
    /// Default setup, these inputs.
    pub fn new(inputs: Vec<Input>) -> Self {
        Self {
            setup: Setup::default(),
            inputs,
        }
    }

    /// Reads any bytes as a script.
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut r = Reader(data);
        let setup = r.setup();
        let mut inputs = Vec::new();
        while !r.0.is_empty() {
            inputs.push(r.input());
        }
        Self { setup, inputs }
    }

    /// Writes the script so that [`Script::from_bytes`] reads it back (fields out of their
    /// documented ranges are brought into them).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.setup(&self.setup);
        for input in &self.inputs {
            w.input(input);
        }
        w.0
    }
}

/// Reads script bytes; a read past the end gives zeros.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl Reader<'_> {
    pub(super) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    pub(super) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(super) fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.iter_mut().for_each(|b| *b = self.u8());
        u64::from_le_bytes(bytes)
    }

    pub(super) fn pick<T: Copy>(&mut self, all: &[T]) -> T {
        all[usize::from(self.u8()) % all.len()]
    }

    fn num(&mut self) -> Num {
        match self.u8() {
            t @ 0..0xF0 => Num::Rel((t % 32) as i8 - 8),
            _ => Num::Abs(self.u64()),
        }
    }

    pub(super) fn opt_u64(&mut self) -> Option<u64> {
        match self.u8() {
            0 => None,
            t @ 1..0xF0 => Some(u64::from(t - 1)),
            _ => Some(self.u64()),
        }
    }

    fn setup(&mut self) -> Setup {
        let flags = self.u8();
        let packed = self.u8();
        let bit = |n: u8| flags & (1 << n) != 0;
        let mut setup = Setup {
            join: bit(0),
            no_repair: bit(1),
            no_resend: bit(2),
            small_frames: bit(6),
            versions: packed & 3,
            jitter: (packed >> 2) & 3,
            outbox: packed >> 4,
            ..Setup::default()
        };
        setup.heartbeat = bit(3).then(|| self.u8());
        setup.max_attempts = bit(4).then(|| self.u8() % 8);
        setup.max_elapsed_secs = bit(5).then(|| self.u8());
        setup.seed = self.u8();
        setup.resume = bit(7).then(|| ResumeSeed {
            session: self.u8() % 4,
            cursor: self.opt_u64(),
            sequence: self.opt_u64(),
            pending: self.u8() % 4,
        });
        setup
    }

    fn content(&mut self) -> Content {
        use Content::*;
        self.pick(&[Text, Empty, Null, Number, Object])
    }

    fn input(&mut self) -> Input {
        match self.u8() % 13 {
            0 => {
                use TimeUnit::*;
                let unit = self.pick(&[Micros, Millis, Secs, Hours]);
                Input::Wait {
                    amount: self.u16(),
                    unit,
                }
            }
            1 => Input::Timeout,
            2 => Input::FireTimer,
            3 => Input::Connected,
            4 => Input::ConnectFailed,
            5 => Input::Closed(match self.u8() {
                0 => None,
                1 => Some(1000),
                2 => Some(1006),
                3 => Some(4001),
                4 => Some(4002),
                5 => Some(1002),
                _ => Some(self.u16()),
            }),
            6 => Input::Binary,
            7 => Input::Text(self.server_text()),
            8 => {
                let len = usize::from(self.u8()).min(self.0.len());
                let (text, rest) = self.0.split_at(len);
                self.0 = rest;
                Input::RawText(String::from_utf8_lossy(text).into_owned())
            }
            9 => Input::Send(self.content()),
            10 => {
                let id = self.u8() % 4;
                Input::SendWithId(id, self.content())
            }
            11 => Input::Disconnect,
            _ => Input::CredentialsRefreshed,
        }
    }

    fn server_text(&mut self) -> ServerText {
        match self.u8() % 12 {
            0 => {
                let flags = self.u8();
                let session = self.u8() % 4;
                let cursor = self.num();
                let sequence = (flags & 4 != 0).then(|| self.num());
                ServerText::HelloOk {
                    protocol: PROTOCOLS[usize::from(flags >> 4) % 4],
                    session,
                    resumed: flags & 1 != 0,
                    cursor,
                    sequence,
                    heartbeat_ms: self.opt_u64(),
                    resync_required: flags & 2 != 0,
                }
            }
            1 => {
                let flags = self.u8();
                let session = self.u8() % 4;
                let cursor = self.num();
                ServerText::Joined {
                    session,
                    cursor,
                    sequence: (flags & 2 != 0).then(|| self.num()),
                    protocol_version: (flags & 4 != 0)
                        .then(|| PROTOCOLS[usize::from(flags >> 4) % 4]),
                    resync_required: flags & 1 != 0,
                }
            }
            2 => {
                let k = self.u8();
                let kind = match k % 4 {
                    0 => LiveKind::Message,
                    1 => LiveKind::Token,
                    2 => LiveKind::Error,
                    _ => LiveKind::Response {
                        request: (k >> 2) & 7,
                        status: (k >> 5) & 3,
                    },
                };
                let shape = match self.u8() % 4 {
                    0 => Shape::Both,
                    1 => Shape::SeqOnly,
                    2 => Shape::CursorOnly,
                    _ => Shape::Split(self.num()),
                };
                ServerText::Live {
                    kind,
                    seq: self.num(),
                    shape,
                }
            }
            3 => {
                use ReplayPath::*;
                let path = self.pick(&[Hello, Join, Inner, NoSeq, BadData]);
                ServerText::Replay {
                    seq: self.num(),
                    path,
                }
            }
            4 => ServerText::ReplayEnd {
                cursor: (self.u8() & 1 != 0).then(|| self.num()),
            },
            5 => ServerText::Ping,
            6 => ServerText::Pong,
            7 => ServerText::HelloError {
                code: self.u8() % HELLO_ERROR_CODES.len() as u8,
                next_step: self.u8() % (NEXT_STEPS.len() as u8 + 1),
                retry_after: self.opt_u64(),
            },
            8 => {
                use ErrorKind::*;
                ServerText::Error(self.pick(&[
                    Bare,
                    UnknownType,
                    VersionUnsupported,
                    AuthRequired,
                    NewCode,
                ]))
            }
            9 => ServerText::Snapshot,
            10 => ServerText::Notice,
            _ => {
                use Garbage::*;
                ServerText::Garbage(self.pick(&[
                    Empty,
                    Truncated,
                    Array,
                    Null,
                    NumericType,
                    NegativeSeq,
                    FloatSeq,
                    HugeSeq,
                    Untyped,
                    Deep,
                ]))
            }
        }
    }
}

/// `hello_error` codes: every known one, then one this version does not know.
pub(super) const HELLO_ERROR_CODES: [&str; 12] = [
    "auth_required",
    "auth_unauthorized",
    "protocol_unsupported",
    "pairing_required",
    "agent_not_found",
    "rate_limited",
    "origin_not_allowed",
    "configuration_error",
    "version_unsupported",
    "invalid_protocol_hello",
    "unauthorized",
    "brand_new_code",
];

/// `next_step` values.
pub(super) const NEXT_STEPS: [&str; 6] = [
    "reauthenticate",
    "repair",
    "upgrade_client",
    "downgrade_client",
    "wait_then_retry",
    "do_not_retry",
];

/// Writes script bytes (the inverse of [`Reader`]).
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn num(&mut self, n: Num) {
        match n {
            Num::Rel(delta) => self.u8((delta.clamp(-8, 23) + 8) as u8),
            Num::Abs(v) => {
                self.u8(0xF0);
                self.u64(v);
            }
        }
    }

    pub(super) fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v @ 0..0xEF) => self.u8(v as u8 + 1),
            Some(v) => {
                self.u8(0xF0);
                self.u64(v);
            }
        }
    }

    fn setup(&mut self, s: &Setup) {
        let flags = [
            s.join,
            s.no_repair,
            s.no_resend,
            s.heartbeat.is_some(),
            s.max_attempts.is_some(),
            s.max_elapsed_secs.is_some(),
            s.small_frames,
            s.resume.is_some(),
        ]
        .iter()
        .enumerate()
        .fold(0u8, |acc, (i, on)| acc | (u8::from(*on) << i));
        self.u8(flags);
        self.u8((s.versions & 3) | (s.jitter & 3) << 2 | (s.outbox & 15) << 4);
        for b in [s.heartbeat, s.max_attempts, s.max_elapsed_secs]
            .into_iter()
            .flatten()
        {
            self.u8(b);
        }
        self.u8(s.seed);
        if let Some(r) = s.resume {
            self.u8(r.session);
            self.opt_u64(r.cursor);
            self.opt_u64(r.sequence);
            self.u8(r.pending);
        }
    }

    fn content(&mut self, c: Content) {
        self.u8(c as u8);
    }

    fn input(&mut self, input: &Input) {
        let op = match input {
            Input::Wait { .. } => 0,
            Input::Timeout => 1,
            Input::FireTimer => 2,
            Input::Connected => 3,
            Input::ConnectFailed => 4,
            Input::Closed(_) => 5,
            Input::Binary => 6,
            Input::Text(_) => 7,
            Input::RawText(_) => 8,
            Input::Send(_) => 9,
            Input::SendWithId(..) => 10,
            Input::Disconnect => 11,
            Input::CredentialsRefreshed => 12,
        };
        self.u8(op);
        match input {
            Input::Wait { amount, unit } => {
                self.u8(*unit as u8);
                self.0.extend_from_slice(&amount.to_le_bytes());
            }
            Input::Closed(code) => match code {
                None => self.u8(0),
                Some(code) => match [1000, 1006, 4001, 4002, 1002]
                    .iter()
                    .position(|c| c == code)
                {
                    Some(i) => self.u8(i as u8 + 1),
                    None => {
                        self.u8(6);
                        self.0.extend_from_slice(&code.to_le_bytes());
                    }
                },
            },
            Input::Text(text) => self.server_text(text),
            Input::RawText(text) => {
                let mut end = text.len().min(255);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                self.u8(end as u8);
                self.0.extend_from_slice(&text.as_bytes()[..end]);
            }
            Input::Send(c) => self.content(*c),
            Input::SendWithId(id, c) => {
                self.u8(*id);
                self.content(*c);
            }
            _ => {}
        }
    }

    fn protocol_index(p: u32) -> u8 {
        PROTOCOLS.iter().position(|x| *x == p).unwrap_or(0) as u8
    }

    fn server_text(&mut self, text: &ServerText) {
        match *text {
            ServerText::HelloOk {
                protocol,
                session,
                resumed,
                cursor,
                sequence,
                heartbeat_ms,
                resync_required,
            } => {
                self.u8(0);
                let flags = u8::from(resumed)
                    | u8::from(resync_required) << 1
                    | u8::from(sequence.is_some()) << 2
                    | Self::protocol_index(protocol) << 4;
                self.u8(flags);
                self.u8(session);
                self.num(cursor);
                if let Some(s) = sequence {
                    self.num(s);
                }
                self.opt_u64(heartbeat_ms);
            }
            ServerText::Joined {
                session,
                cursor,
                sequence,
                protocol_version,
                resync_required,
            } => {
                self.u8(1);
                let flags = u8::from(resync_required)
                    | u8::from(sequence.is_some()) << 1
                    | u8::from(protocol_version.is_some()) << 2
                    | Self::protocol_index(protocol_version.unwrap_or(1)) << 4;
                self.u8(flags);
                self.u8(session);
                self.num(cursor);
                if let Some(s) = sequence {
                    self.num(s);
                }
            }
            ServerText::Live { kind, seq, shape } => {
                self.u8(2);
                self.u8(match kind {
                    LiveKind::Message => 0,
                    LiveKind::Token => 1,
                    LiveKind::Error => 2,
                    LiveKind::Response { request, status } => {
                        3 | (request & 7) << 2 | (status & 3) << 5
                    }
                });
                match shape {
                    Shape::Both => self.u8(0),
                    Shape::SeqOnly => self.u8(1),
                    Shape::CursorOnly => self.u8(2),
                    Shape::Split(cursor) => {
                        self.u8(3);
                        self.num(cursor);
                    }
                }
                self.num(seq);
            }
            ServerText::Replay { seq, path } => {
                self.u8(3);
                self.u8(path as u8);
                self.num(seq);
            }
            ServerText::ReplayEnd { cursor } => {
                self.u8(4);
                self.u8(u8::from(cursor.is_some()));
                if let Some(c) = cursor {
                    self.num(c);
                }
            }
            ServerText::Ping => self.u8(5),
            ServerText::Pong => self.u8(6),
            ServerText::HelloError {
                code,
                next_step,
                retry_after,
            } => {
                self.u8(7);
                self.u8(code);
                self.u8(next_step);
                self.opt_u64(retry_after);
            }
            ServerText::Error(kind) => {
                self.u8(8);
                self.u8(kind as u8);
            }
            ServerText::Snapshot => self.u8(9),
            ServerText::Notice => self.u8(10),
            ServerText::Garbage(g) => {
                self.u8(11);
                self.u8(g as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_scripts_read_back_and_any_bytes_are_a_script() {
        let script = Script {
            setup: Setup {
                join: true,
                heartbeat: Some(3),
                max_attempts: Some(2),
                versions: 2,
                jitter: 3,
                outbox: 15,
                seed: 9,
                resume: Some(ResumeSeed {
                    session: 1,
                    cursor: Some(u64::MAX),
                    sequence: Some(5),
                    pending: 2,
                }),
                ..Setup::default()
            },
            inputs: vec![
                Input::Wait {
                    amount: 500,
                    unit: TimeUnit::Millis,
                },
                Input::Closed(Some(4001)),
                Input::Closed(Some(3000)),
                Input::Closed(None),
                Input::RawText("{\"type\":\"é".into()),
                Input::SendWithId(3, Content::Object),
                Input::Text(ServerText::HelloOk {
                    protocol: 2,
                    session: 3,
                    resumed: true,
                    cursor: Num::Rel(-8),
                    sequence: Some(Num::Abs(1 << 40)),
                    heartbeat_ms: Some(30_000),
                    resync_required: true,
                }),
                Input::Text(ServerText::Live {
                    kind: LiveKind::Response {
                        request: 5,
                        status: 3,
                    },
                    seq: Num::Rel(23),
                    shape: Shape::Split(Num::Abs(7)),
                }),
                Input::Text(ServerText::ReplayEnd {
                    cursor: Some(Num::SAME),
                }),
                Input::Text(ServerText::HelloError {
                    code: 5,
                    next_step: 6,
                    retry_after: Some(0xEE),
                }),
                Input::Text(ServerText::Garbage(Garbage::Deep)),
                Input::CredentialsRefreshed,
            ],
        };
        assert_eq!(Script::from_bytes(&script.to_bytes()), script);
        assert_eq!(Script::from_bytes(&[]), Script::default());
        for data in [&b"\xff"[..], b"\xff\xff\xff\x07\x00", b"\x08\xff"] {
            let _ = Script::from_bytes(data);
        }
    }
}
