//! Server fuzz scripts: typed steps (client frames from realistic templates, transport events,
//! time steps, application commands), read from any bytes and written back by the inverse
//! writer, so committed seeds are typed scripts whose bytes mean what they say.
//!
//! # Encoding
//! A [`ServerScript`] is a [`ServerSetup`] header (four bytes) followed by steps until the bytes
//! run out; a read past the end gives zeros. Each step starts with an opcode byte taken modulo
//! the number of [`Step`] variants (in declaration order), followed by its fields; connection
//! ids are one byte modulo [`CONNS`]. Small enums are one byte modulo their number of
//! variants; [`Since`], [`SessionRef`] and [`Ver`] document their own byte.

use super::script::{Reader, TimeUnit, Writer};

/// Connection ids range over `0..CONNS` (small, so ids are reused after a close).
pub const CONNS: u8 = 6;

/// The server's configuration. All zeros is a small, strict server: token auth off, tight
/// windows and rings, the in-flight window confirmed only by explicit [`Step::Sent`] steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerSetup {
    /// Require `?token=secret`.
    pub auth: bool,
    /// The harness confirms every written frame at once (`handle_sent` with its exact size),
    /// as a fast socket would; otherwise only [`Step::Sent`]/[`Step::SentAll`] confirm.
    pub auto_ack: bool,
    /// Versions: 0 = 1..=2, 1 = 1..=1, 2 = 2..=2, 3 = 1..=2.
    pub versions: u8,
    /// Reap after one missed beat instead of two.
    pub one_beat: bool,
    /// Session TTL 5 s and dedup TTL 20 s (instead of 1 h and 24 h).
    pub short_ttl: bool,
    /// `max_frame_bytes` 512 bytes (instead of 64 KiB).
    pub small_payload: bool,
    /// Byte bounds: `max_buffered_bytes` 512 and `ring_max_bytes` 4 KiB (instead of 1 MiB).
    pub small_bytes: bool,
    /// `ring_max_events`: 1, 3, 16, 256.
    pub ring: u8,
    /// `max_queued_frames`: 1, 2, 8, 1000.
    pub window: u8,
    /// `max_control_frames`: 1, 4, 16, 256.
    pub control: u8,
    /// `dedup_max`: 2, 8, 4096, 4096.
    pub dedup: u8,
    /// `max_sessions`: 1, 2, 4, 10 000.
    pub sessions: u8,
    /// `max_connections`: 1, 2, 4, 10 000.
    pub connections: u8,
    /// `heartbeat_interval`: 1 s, 5 s, 30 s, off.
    pub heartbeat: u8,
    /// `handshake_timeout`: 1 s, 2 s, 10 s, 60 s.
    pub handshake: u8,
    /// The server's PRNG seed.
    pub seed: u8,
}

/// Which `?token=` a connection presents (only checked with [`ServerSetup::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The configured one.
    Right,
    /// Another one.
    Wrong,
    /// None.
    Absent,
}

/// A version field of a handshake, as sent. Byte: modulo 11 in this order, `Int` covering
/// −1..=3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ver {
    /// The key is missing.
    Absent,
    /// An integer, −1..=3.
    Int(i8),
    /// A string (`"2"`).
    Str,
    /// A boolean.
    Bool,
    /// A float (`1.5`).
    Float,
    /// `null`.
    Null,
    /// Above `u32::MAX`.
    Huge,
}

/// Which `agent_id` a handshake names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// The registered agent `echo`.
    Known,
    /// An unregistered one.
    Other,
    /// No `agent_id`.
    Absent,
    /// `""`.
    Empty,
}

/// The `session_id` a handshake (or a publish) names. Byte: 0 `None`, 1 `Unknown`, 2 `Empty`,
/// else `Known(b − 3)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRef {
    /// No `session_id`.
    None,
    /// An id the server never issued.
    Unknown,
    /// `""`.
    Empty,
    /// Index (modulo their number, newest first) into the sessions the server created.
    Known(u8),
}

/// A `since` cursor. Byte: 0 `None`, `0xFD` `Negative`, `0xFE` `Str`, `0xFF` `Abs` of the next
/// 8 bytes, else `Rel((b % 32) − 24)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// No `since`.
    None,
    /// The session's head plus this (−24..=7), saturating: mostly a recent cursor.
    Rel(i8),
    /// This value.
    Abs(u64),
    /// `-1`.
    Negative,
    /// `"3"`.
    Str,
}

/// The version fields of a `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// `protocol_min`, `protocol_max`.
    Flat(Ver, Ver),
    /// `protocol: {min, max}`.
    Nested(Ver, Ver),
}

/// The `content` of a `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgContent {
    /// A short string.
    Text,
    /// `""`.
    Empty,
    /// Whitespace only.
    Blank,
    /// `null`.
    Null,
    /// No `content` key.
    Absent,
    /// A number.
    Number,
    /// An object.
    Object,
}

/// The `request_id` of a `message`. Byte: 0 `None`, 1 `Numeric`, else `Id(b % 4)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqId {
    /// None: the server generates one.
    None,
    /// A number: a decode error.
    Numeric,
    /// `r0`..`r3` (few, so duplicates happen).
    Id(u8),
}

/// Malformed client frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientGarbage {
    /// Not JSON.
    NotJson,
    /// Truncated JSON.
    Truncated,
    /// An array.
    Array,
    /// `null`.
    Null,
    /// A number as `type`.
    NumericType,
    /// The empty string.
    Empty,
    /// Nesting beyond serde_json's recursion limit.
    Deep,
    /// `hello` with an object as `session_id`.
    IllTypedHello,
}

/// A text frame from a client, built from a realistic template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientText {
    /// `hello`.
    Hello {
        /// `agent_id`.
        agent: Agent,
        /// Version fields.
        versions: Versions,
        /// `session_id`.
        session: SessionRef,
        /// `since`.
        since: Since,
        /// Offer the `streaming` capability.
        streaming: bool,
    },
    /// Legacy `join`.
    Join {
        /// `agent_id`.
        agent: Agent,
        /// `min_version`.
        min: Ver,
        /// `max_version`.
        max: Ver,
        /// `session_id`.
        session: SessionRef,
        /// `since`.
        since: Since,
    },
    /// `message` (with `type`), or the untyped form.
    Message {
        /// `content`.
        content: MsgContent,
        /// `request_id`.
        request_id: ReqId,
        /// Leave out `"type":"message"` (what an untyped frame means).
        untyped: bool,
    },
    /// v2 `resync`.
    Resync(Since),
    /// `ping`.
    Ping,
    /// `pong`.
    Pong,
    /// `leave`.
    Leave,
    /// `abort`.
    Abort,
    /// A frame type the server does not know (counts towards the flood limit).
    Unknown,
    /// Something malformed.
    Garbage(ClientGarbage),
    /// A `message` one byte above `max_frame_bytes`.
    Oversized,
}

/// How many bytes a [`Step::Sent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentBytes {
    /// The size of the oldest unconfirmed frame (what a correct adapter reports).
    Exact,
    /// Zero.
    Zero,
    /// Twice the size.
    Double,
    /// `usize::MAX`.
    Max,
}

/// What the application publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// A small `message`.
    Small,
    /// A 3 KiB `message` (fills byte windows and rings).
    Large,
    /// A `token_stream` chunk.
    Token,
    /// A protocol frame type (`replay`): refused.
    ReservedKind,
    /// A `seq` field: refused.
    ReservedField,
    /// A small `message` to every session at once (`publish_to`; the session is ignored).
    Shared,
}

/// Which snapshot a [`Step::Restore`] starts the next server instance from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreFrom {
    /// One taken right now (nothing lost).
    Latest,
    /// One saved by an earlier [`Step::Snapshot`], newest first (modulo their number; `Latest`
    /// if none): the writes since are lost.
    Saved(u8),
    /// No snapshot: an empty server.
    Empty,
}

/// One step: an input to the server machine, a time step, or an application command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
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
    Connect {
        /// Connection id (modulo [`CONNS`]).
        conn: u8,
        /// Its credentials.
        token: Token,
    },
    /// `handle_text` with a templated frame.
    Text {
        /// Connection id.
        conn: u8,
        /// The frame.
        text: ClientText,
    },
    /// `handle_text` with these characters (at most 255 bytes).
    RawText {
        /// Connection id.
        conn: u8,
        /// The text.
        text: String,
    },
    /// `handle_binary`.
    Binary {
        /// Connection id.
        conn: u8,
    },
    /// `handle_sent` for the connection's oldest unconfirmed frame (or for none).
    Sent {
        /// Connection id.
        conn: u8,
        /// The size reported.
        bytes: SentBytes,
    },
    /// `handle_sent` with the exact size for every unconfirmed frame of the connection.
    SentAll {
        /// Connection id.
        conn: u8,
    },
    /// `handle_closed`.
    Closed {
        /// Connection id.
        conn: u8,
    },
    /// `publish` to a session.
    Publish {
        /// The session (`None`/`Empty` name no session: an unknown one).
        session: SessionRef,
        /// What.
        kind: Publish,
    },
    /// `respond` to a request the application got (newest first, modulo their number), or to
    /// an id it never got if none.
    Respond {
        /// Which request.
        request: u8,
        /// 0 ok, 1 error, 2 rejected.
        status: u8,
    },
    /// `broadcast`.
    Broadcast,
    /// `disconnect` (graceful close 1000).
    Disconnect {
        /// Connection id.
        conn: u8,
    },
    /// `shutdown`.
    Shutdown,
    /// `snapshot`, through JSON, saved for a later [`Step::Restore`].
    Snapshot,
    /// The instance dies (all its sockets with it); the next one is restored.
    Restore(RestoreFrom),
}

/// A server fuzz script: a setup and steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerScript {
    /// Configuration.
    pub setup: ServerSetup,
    /// Steps, in order.
    pub steps: Vec<Step>,
}

impl ServerScript {
    /// Reads any bytes as a script.
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut r = Reader(data);
        let setup = setup(&mut r);
        let mut steps = Vec::new();
        while !r.0.is_empty() {
            steps.push(step(&mut r));
        }
        Self { setup, steps }
    }

    /// Writes the script so that [`ServerScript::from_bytes`] reads it back (fields out of
    /// their documented ranges are brought into them).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        write_setup(&mut w, &self.setup);
        for s in &self.steps {
            write_step(&mut w, s);
        }
        w.0
    }
}

fn setup(r: &mut Reader<'_>) -> ServerSetup {
    let flags = r.u8();
    let sizes = r.u8();
    let limits = r.u8();
    let bit = |n: u8| flags & (1 << n) != 0;
    ServerSetup {
        auth: bit(0),
        auto_ack: bit(1),
        versions: (flags >> 2) & 3,
        one_beat: bit(4),
        short_ttl: bit(5),
        small_payload: bit(6),
        small_bytes: bit(7),
        ring: sizes & 3,
        window: (sizes >> 2) & 3,
        control: (sizes >> 4) & 3,
        dedup: sizes >> 6,
        sessions: limits & 3,
        connections: (limits >> 2) & 3,
        heartbeat: (limits >> 4) & 3,
        handshake: limits >> 6,
        seed: r.u8(),
    }
}

fn write_setup(w: &mut Writer, s: &ServerSetup) {
    let flags = u8::from(s.auth)
        | u8::from(s.auto_ack) << 1
        | (s.versions & 3) << 2
        | u8::from(s.one_beat) << 4
        | u8::from(s.short_ttl) << 5
        | u8::from(s.small_payload) << 6
        | u8::from(s.small_bytes) << 7;
    w.u8(flags);
    w.u8((s.ring & 3) | (s.window & 3) << 2 | (s.control & 3) << 4 | (s.dedup & 3) << 6);
    w.u8((s.sessions & 3)
        | (s.connections & 3) << 2
        | (s.heartbeat & 3) << 4
        | (s.handshake & 3) << 6);
    w.u8(s.seed);
}

const STEPS: u8 = 18;

fn conn(r: &mut Reader<'_>) -> u8 {
    r.u8() % CONNS
}

fn step(r: &mut Reader<'_>) -> Step {
    match r.u8() % STEPS {
        0 => {
            use TimeUnit::*;
            let unit = r.pick(&[Micros, Millis, Secs, Hours]);
            Step::Wait {
                amount: r.u16(),
                unit,
            }
        }
        1 => Step::Timeout,
        2 => Step::FireTimer,
        3 => Step::Connect {
            conn: conn(r),
            token: r.pick(&[Token::Right, Token::Wrong, Token::Absent]),
        },
        4 => Step::Text {
            conn: conn(r),
            text: client_text(r),
        },
        5 => {
            let conn = conn(r);
            let len = usize::from(r.u8()).min(r.0.len());
            let (text, rest) = r.0.split_at(len);
            r.0 = rest;
            Step::RawText {
                conn,
                text: String::from_utf8_lossy(text).into_owned(),
            }
        }
        6 => Step::Binary { conn: conn(r) },
        7 => {
            use SentBytes::*;
            Step::Sent {
                conn: conn(r),
                bytes: r.pick(&[Exact, Zero, Double, Max]),
            }
        }
        8 => Step::SentAll { conn: conn(r) },
        9 => Step::Closed { conn: conn(r) },
        10 => {
            use Publish::*;
            let session = session_ref(r);
            let b = r.u8();
            Step::Publish {
                session,
                // The high bit: to every session (older scripts seldom set it).
                kind: if b & 0x80 != 0 {
                    Shared
                } else {
                    [Small, Large, Token, ReservedKind, ReservedField][usize::from(b) % 5]
                },
            }
        }
        11 => Step::Respond {
            request: r.u8(),
            status: r.u8() % 3,
        },
        12 => Step::Broadcast,
        13 => Step::Disconnect { conn: conn(r) },
        14 => Step::Shutdown,
        15 => Step::Snapshot,
        16 => Step::Restore(match r.u8() % 4 {
            0 => RestoreFrom::Latest,
            1 => RestoreFrom::Empty,
            _ => RestoreFrom::Saved(r.u8()),
        }),
        _ => Step::Text {
            // Most steps of a real session are frames: a second opcode for them.
            conn: conn(r),
            text: client_text(r),
        },
    }
}

fn ver(r: &mut Reader<'_>) -> Ver {
    match r.u8() % 11 {
        0 => Ver::Absent,
        b @ 1..=5 => Ver::Int(b as i8 - 2),
        6 => Ver::Str,
        7 => Ver::Bool,
        8 => Ver::Float,
        9 => Ver::Null,
        _ => Ver::Huge,
    }
}

fn session_ref(r: &mut Reader<'_>) -> SessionRef {
    match r.u8() {
        0 => SessionRef::None,
        1 => SessionRef::Unknown,
        2 => SessionRef::Empty,
        b => SessionRef::Known(b - 3),
    }
}

fn since(r: &mut Reader<'_>) -> Since {
    match r.u8() {
        0 => Since::None,
        0xFD => Since::Negative,
        0xFE => Since::Str,
        0xFF => Since::Abs(r.u64()),
        b => Since::Rel((b % 32) as i8 - 24),
    }
}

fn agent(r: &mut Reader<'_>) -> Agent {
    r.pick(&[Agent::Known, Agent::Other, Agent::Absent, Agent::Empty])
}

fn client_text(r: &mut Reader<'_>) -> ClientText {
    match r.u8() % 11 {
        0 => {
            let flags = r.u8();
            let (min, max) = (ver(r), ver(r));
            ClientText::Hello {
                agent: agent(r),
                versions: if flags & 1 == 0 {
                    Versions::Flat(min, max)
                } else {
                    Versions::Nested(min, max)
                },
                session: session_ref(r),
                since: since(r),
                streaming: flags & 2 != 0,
            }
        }
        1 => ClientText::Join {
            agent: agent(r),
            min: ver(r),
            max: ver(r),
            session: session_ref(r),
            since: since(r),
        },
        2 => {
            use MsgContent::*;
            let content = r.pick(&[Text, Empty, Blank, Null, Absent, Number, Object]);
            let request_id = match r.u8() {
                0 => ReqId::None,
                1 => ReqId::Numeric,
                b => ReqId::Id(b % 4),
            };
            ClientText::Message {
                content,
                request_id,
                untyped: r.u8() & 1 != 0,
            }
        }
        3 => ClientText::Resync(since(r)),
        4 => ClientText::Ping,
        5 => ClientText::Pong,
        6 => ClientText::Leave,
        7 => ClientText::Abort,
        8 => ClientText::Unknown,
        9 => {
            use ClientGarbage::*;
            ClientText::Garbage(r.pick(&[
                NotJson,
                Truncated,
                Array,
                Null,
                NumericType,
                Empty,
                Deep,
                IllTypedHello,
            ]))
        }
        _ => ClientText::Oversized,
    }
}

fn write_ver(w: &mut Writer, v: Ver) {
    w.u8(match v {
        Ver::Absent => 0,
        Ver::Int(i) => (i.clamp(-1, 3) + 2) as u8,
        Ver::Str => 6,
        Ver::Bool => 7,
        Ver::Float => 8,
        Ver::Null => 9,
        Ver::Huge => 10,
    });
}

fn write_session_ref(w: &mut Writer, s: SessionRef) {
    w.u8(match s {
        SessionRef::None => 0,
        SessionRef::Unknown => 1,
        SessionRef::Empty => 2,
        SessionRef::Known(k) => k.min(0xFF - 3) + 3,
    });
}

fn write_since(w: &mut Writer, s: Since) {
    match s {
        Since::None => w.u8(0),
        Since::Negative => w.u8(0xFD),
        Since::Str => w.u8(0xFE),
        Since::Abs(v) => {
            w.u8(0xFF);
            w.u64(v);
        }
        Since::Rel(d) => {
            let t = (d.clamp(-24, 7) + 24) as u8;
            w.u8(if t == 0 { 32 } else { t });
        }
    }
}

fn write_agent(w: &mut Writer, a: Agent) {
    w.u8(a as u8);
}

fn write_client_text(w: &mut Writer, t: &ClientText) {
    match *t {
        ClientText::Hello {
            agent,
            versions,
            session,
            since,
            streaming,
        } => {
            w.u8(0);
            let (nested, min, max) = match versions {
                Versions::Flat(a, b) => (false, a, b),
                Versions::Nested(a, b) => (true, a, b),
            };
            w.u8(u8::from(nested) | u8::from(streaming) << 1);
            write_ver(w, min);
            write_ver(w, max);
            write_agent(w, agent);
            write_session_ref(w, session);
            write_since(w, since);
        }
        ClientText::Join {
            agent,
            min,
            max,
            session,
            since,
        } => {
            w.u8(1);
            write_agent(w, agent);
            write_ver(w, min);
            write_ver(w, max);
            write_session_ref(w, session);
            write_since(w, since);
        }
        ClientText::Message {
            content,
            request_id,
            untyped,
        } => {
            w.u8(2);
            w.u8(content as u8);
            w.u8(match request_id {
                ReqId::None => 0,
                ReqId::Numeric => 1,
                ReqId::Id(i) => 4 + (i & 3),
            });
            w.u8(u8::from(untyped));
        }
        ClientText::Resync(s) => {
            w.u8(3);
            write_since(w, s);
        }
        ClientText::Ping => w.u8(4),
        ClientText::Pong => w.u8(5),
        ClientText::Leave => w.u8(6),
        ClientText::Abort => w.u8(7),
        ClientText::Unknown => w.u8(8),
        ClientText::Garbage(g) => {
            w.u8(9);
            w.u8(g as u8);
        }
        ClientText::Oversized => w.u8(10),
    }
}

fn write_step(w: &mut Writer, s: &Step) {
    let op = match s {
        Step::Wait { .. } => 0,
        Step::Timeout => 1,
        Step::FireTimer => 2,
        Step::Connect { .. } => 3,
        Step::Text { .. } => 4,
        Step::RawText { .. } => 5,
        Step::Binary { .. } => 6,
        Step::Sent { .. } => 7,
        Step::SentAll { .. } => 8,
        Step::Closed { .. } => 9,
        Step::Publish { .. } => 10,
        Step::Respond { .. } => 11,
        Step::Broadcast => 12,
        Step::Disconnect { .. } => 13,
        Step::Shutdown => 14,
        Step::Snapshot => 15,
        Step::Restore(_) => 16,
    };
    w.u8(op);
    match s {
        Step::Wait { amount, unit } => {
            w.u8(*unit as u8);
            w.0.extend_from_slice(&amount.to_le_bytes());
        }
        Step::Connect { conn, token } => {
            w.u8(conn % CONNS);
            w.u8(*token as u8);
        }
        Step::Text { conn, text } => {
            w.u8(conn % CONNS);
            write_client_text(w, text);
        }
        Step::RawText { conn, text } => {
            w.u8(conn % CONNS);
            let mut end = text.len().min(255);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            w.u8(end as u8);
            w.0.extend_from_slice(&text.as_bytes()[..end]);
        }
        Step::Binary { conn }
        | Step::SentAll { conn }
        | Step::Closed { conn }
        | Step::Disconnect { conn } => w.u8(conn % CONNS),
        Step::Sent { conn, bytes } => {
            w.u8(conn % CONNS);
            w.u8(*bytes as u8);
        }
        Step::Publish { session, kind } => {
            write_session_ref(w, *session);
            w.u8(match kind {
                Publish::Shared => 0x80,
                k => *k as u8,
            });
        }
        Step::Respond { request, status } => {
            w.u8(*request);
            w.u8(status % 3);
        }
        Step::Restore(from) => match from {
            RestoreFrom::Latest => w.u8(0),
            RestoreFrom::Empty => w.u8(1),
            RestoreFrom::Saved(k) => {
                w.u8(2);
                w.u8(*k);
            }
        },
        Step::Timeout | Step::FireTimer | Step::Broadcast | Step::Shutdown | Step::Snapshot => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_server_scripts_read_back_and_any_bytes_are_a_script() {
        let script = ServerScript {
            setup: ServerSetup {
                auth: true,
                versions: 2,
                short_ttl: true,
                small_bytes: true,
                ring: 3,
                window: 1,
                control: 2,
                dedup: 1,
                sessions: 3,
                connections: 2,
                heartbeat: 1,
                handshake: 3,
                seed: 7,
                ..ServerSetup::default()
            },
            steps: vec![
                Step::Wait {
                    amount: 1500,
                    unit: TimeUnit::Millis,
                },
                Step::Connect {
                    conn: 5,
                    token: Token::Wrong,
                },
                Step::Text {
                    conn: 5,
                    text: ClientText::Hello {
                        agent: Agent::Known,
                        versions: Versions::Nested(Ver::Int(-1), Ver::Huge),
                        session: SessionRef::Known(4),
                        since: Since::Rel(-24),
                        streaming: true,
                    },
                },
                Step::Text {
                    conn: 1,
                    text: ClientText::Join {
                        agent: Agent::Empty,
                        min: Ver::Str,
                        max: Ver::Int(3),
                        session: SessionRef::Unknown,
                        since: Since::Abs(u64::MAX),
                    },
                },
                Step::Text {
                    conn: 2,
                    text: ClientText::Message {
                        content: MsgContent::Blank,
                        request_id: ReqId::Id(3),
                        untyped: true,
                    },
                },
                Step::Text {
                    conn: 2,
                    text: ClientText::Resync(Since::Rel(7)),
                },
                Step::RawText {
                    conn: 0,
                    text: "{\"type\":\"é".into(),
                },
                Step::Sent {
                    conn: 3,
                    bytes: SentBytes::Max,
                },
                Step::Publish {
                    session: SessionRef::Known(0),
                    kind: Publish::ReservedField,
                },
                Step::Respond {
                    request: 9,
                    status: 2,
                },
                Step::Restore(RestoreFrom::Saved(3)),
                Step::Restore(RestoreFrom::Empty),
                Step::Text {
                    conn: 4,
                    text: ClientText::Garbage(ClientGarbage::IllTypedHello),
                },
            ],
        };
        assert_eq!(ServerScript::from_bytes(&script.to_bytes()), script);
        assert_eq!(ServerScript::from_bytes(&[]), ServerScript::default());
        for data in [
            &b"\xff"[..],
            b"\xff\xff\xff\x07\x00",
            b"\x00\x00\x00\x00\x10\x02",
        ] {
            let _ = ServerScript::from_bytes(data);
        }
    }
}
