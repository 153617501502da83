//! Builders for the frames the server writes. Text is assembled by hand so the key order
//! matches the reference server (serde_json's `Map` would sort keys).

use serde::Serialize;

use super::ring::Recorded;

/// Compact JSON of `v`; the types used here always serialize, `null` is a safe fallback.
pub(crate) fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Writes `{"type":..., k:v, ...}` in insertion order.
pub(crate) struct Obj(String);

impl Obj {
    pub(crate) fn new(kind: &str) -> Self {
        let mut s = String::with_capacity(128);
        s.push_str("{\"type\":");
        s.push_str(&json(kind));
        Self(s)
    }

    pub(crate) fn field<T: Serialize + ?Sized>(mut self, key: &str, value: &T) -> Self {
        self.raw_in(key, &json(value));
        self
    }

    pub(crate) fn raw(mut self, key: &str, raw_json: &str) -> Self {
        self.raw_in(key, raw_json);
        self
    }

    fn raw_in(&mut self, key: &str, raw_json: &str) {
        self.0.push(',');
        self.0.push_str(&json(key));
        self.0.push(':');
        self.0.push_str(raw_json);
    }

    /// Closes the object, appending `"cursor":n,"seq":n` as the last two keys.
    pub(crate) fn tracked(self, cursor: u64) -> String {
        self.field("cursor", &cursor).field("seq", &cursor).done()
    }

    pub(crate) fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `{"type":"replay","event":E}` (+ `"seq":n` when `with_seq`), E in GatewayEvent shape with
/// `data` = the original frame exactly as sent.
pub(crate) fn replay(e: &Recorded, with_seq: bool) -> String {
    let event = Obj::new(&e.kind)
        .raw("data", &e.frame)
        .field("event_id", &e.event_id)
        .field("timestamp", &e.timestamp)
        .field("source", "gateway")
        .field("target", &e.target)
        .field("sequence", &e.cursor)
        .done();
    let out = Obj::new("replay").raw("event", &event);
    if with_seq {
        out.field("seq", &e.cursor).done()
    } else {
        out.done()
    }
}

/// v2: `{"type":"replay_end","cursor":c,"replayed":n[,"lost_from":a,"lost_to":b]}`.
pub(crate) fn replay_end(cursor: u64, replayed: u64, lost: Option<(u64, u64)>) -> String {
    let mut o = Obj::new("replay_end")
        .field("cursor", &cursor)
        .field("replayed", &replayed);
    if let Some((a, b)) = lost {
        o = o.field("lost_from", &a).field("lost_to", &b);
    }
    o.done()
}

/// Untracked `{"type":"error","code":c,"message":m[,"field":f]}`.
pub(crate) fn error(code: Option<&str>, message: &str, field: Option<&str>) -> String {
    let mut o = Obj::new("error");
    if let Some(c) = code {
        o = o.field("code", c);
    }
    o = o.field("message", message);
    if let Some(f) = field {
        o = o.field("field", f);
    }
    o.done()
}
