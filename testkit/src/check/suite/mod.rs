//! The checks, in the order they run: what each checks, where the protocol says so, and the
//! function that checks it.

mod client;
mod handshake;
mod heartbeat;
mod input;
mod negotiate;
mod requests;
mod resume;
mod sessions;
mod v2;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{Ctx, Step};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One check.
pub(crate) struct Def {
    pub(crate) id: &'static str,
    pub(crate) section: &'static str,
    pub(crate) title: &'static str,
    /// Longest it may run before it fails.
    pub(crate) limit: Duration,
    pub(crate) run: for<'a> fn(&'a mut Ctx) -> BoxFuture<'a, Step>,
}

/// Declares checks: `id, section, title => function`.
macro_rules! checks {
    ($($id:literal, $section:literal, $title:literal => $f:path;)*) => {
        vec![$(Def {
            id: $id,
            section: $section,
            title: $title,
            limit: Duration::from_secs(60),
            run: |ctx| Box::pin($f(ctx)),
        },)*]
    };
}

/// Every check, in order.
pub(crate) fn all() -> Vec<Def> {
    checks![
        "negotiate.highest-common", "§3.1; v2 Negotiation",
            "the highest version in both ranges is chosen" => negotiate::highest_common;
        "negotiate.too-new", "§3.1, §12",
            "a range above the server's: protocol_unsupported, downgrade_client" => negotiate::too_new;
        "negotiate.too-old", "§3.1, §12",
            "a range below the server's: protocol_unsupported, upgrade_client" => negotiate::too_old;
        "negotiate.string-versions", "§3.1, §14.7; v2 Negotiation",
            "string versions are refused with a typed hello_error" => negotiate::strings;
        "negotiate.float-versions", "§3.1, §14.7; v2 Negotiation",
            "a fractional version is refused with a typed hello_error" => negotiate::floats;
        "negotiate.boolean-versions", "§3.1, §14.7; v2 Negotiation",
            "boolean versions are refused with a typed hello_error" => negotiate::booleans;
        "negotiate.negative-versions", "§3.1, §14.7; v2 Negotiation",
            "a negative version is refused with a typed hello_error" => negotiate::negatives;
        "negotiate.inverted-range", "§13, §14.7; v2 Negotiation",
            "protocol_min > protocol_max is refused with a typed hello_error" => negotiate::inverted;
        "negotiate.second-hello", "§3.4, §14.7",
            "a second hello is answered; the first session stays resumable" => sessions::second_hello;
        "auth.missing-token", "§1.1, §1.2",
            "no token: hello_error auth_required, then close 4003" => handshake::missing_token;
        "auth.wrong-token", "§1.1, §1.2",
            "a wrong token: hello_error auth_required, then close 4003" => handshake::wrong_token;
        "handshake.hello-ok", "§3.2, §3.4",
            "hello_ok comes first, with the reference keys, for a new session" => handshake::hello_ok;
        "handshake.sequence", "§15; v2 hello_ok",
            "hello_ok carries sequence (= cursor for a new session)" => handshake::sequence;
        "handshake.unknown-agent", "§3.1",
            "an unknown agent id: hello_error agent_not_found" => handshake::unknown_agent;
        "handshake.missing-agent", "§3.1",
            "no agent id: hello_error agent_not_found" => handshake::missing_agent;
        "handshake.server-chosen-ids", "§5.1, §14.18; v2 hello_ok",
            "an unknown session_id gets a new session under an id the server chose" => handshake::server_chosen_ids;
        "resume.since-zero", "§3.3, §6.4; v2 Replay",
            "since 0 replays every retained event, in order" => resume::since_zero;
        "resume.since-middle", "§3.3, §6.5",
            "since n replays exactly the events after n" => resume::since_middle;
        "resume.since-head", "§3.3, §6.5",
            "since = head replays nothing; the next event comes live" => resume::since_head;
        "resume.sequence-aligned", "§14.4, §15; v2 hello_ok",
            "hello_ok.sequence on a resume is the cursor the replay starts after" => resume::sequence_aligned;
        "resume.resumed-flag", "§3.2, §14.16; v2 hello_ok",
            "resumed is true for a resumed session, also on a takeover" => resume::resumed_flag;
        "resume.away-events", "§6.1, §14.1; v2 Live events",
            "events published while the client is away are replayed" => resume::away_events;
        "resume.no-duplicates", "§6.5",
            "replay and live events join without a duplicate or a hole" => resume::no_duplicates;
        "resume.beyond-head", "§6.5",
            "since beyond the head: cursor below since (a visible reset), nothing replayed" => resume::beyond_head;
        "resume.older-than-window", "§6.5, §14.3-5; v2 hello_ok, Replay",
            "since older than the retained window: the loss is signalled" => resume::older_than_window;
        "v2.replay-end", "v2 Replay",
            "a v2 replay ends with replay_end {cursor, replayed}" => v2::replay_end;
        "v2.oldest-cursor", "v2 hello_ok",
            "v2 hello_ok carries oldest_cursor and resync_required" => v2::oldest_cursor;
        "v2.resync", "v2 In-band repair",
            "resync replays the events sent after since, then replay_end" => v2::resync;
        "request.accepted-final", "§6.3, §8.1",
            "a request gets a tracked accepted, then a tracked final with an outcome" => requests::accepted_final;
        "request.final-request-id", "§14.13; v2 Requests",
            "final echoes the request_id" => requests::final_request_id;
        "request.duplicate-outcome", "§8.2, §14.13; v2 Requests",
            "a resent request_id gets duplicate with the original outcome" => requests::duplicate_outcome;
        "request.duplicates-not-abuse", "§8.2, §14.11; v2 Requests",
            "resending a request_id never closes the connection" => requests::duplicates_not_abuse;
        "request.empty-content", "§8.1, §14.13; v2 Requests",
            "empty content is refused or answered, never left without a final" => requests::empty_content;
        "request.errors-untracked", "§6.3, §14.14; v2 Live events",
            "error frames carry no seq and use up no sequence number" => requests::errors_untracked;
        "heartbeat.ping-answered", "§7",
            "ping is answered with pong" => heartbeat::ping_answered;
        "heartbeat.server-pings", "§7, §15",
            "the server pings within its heartbeat_ms" => heartbeat::server_pings;
        "heartbeat.reaps-silent", "§7",
            "a silent client is closed after a few heartbeats" => heartbeat::reaps_silent;
        "heartbeat.inbound-only", "§7, §14.15",
            "a silent client is reaped even while it is sent events" => heartbeat::inbound_only;
        "input.invalid-json", "§10, §14.8; v2 Errors and closes",
            "malformed JSON: a typed error, then a close" => input::invalid_json;
        "input.non-object", "§10, §14.8; v2 Errors and closes",
            "JSON that is not an object: a typed error, then a close" => input::non_object;
        "input.binary", "§1, §14.8; v2 Errors and closes",
            "a binary frame: a typed error, then a close" => input::binary;
        "input.oversized", "§10, §14.9; v2 Errors and closes",
            "a frame over max_payload: a typed error, then a close" => input::oversized;
        "input.neighbour-unaffected", "§10",
            "bad input on one connection leaves another one working" => input::neighbour_unaffected;
        "input.unknown-type", "§2.1",
            "an unknown frame type leaves the connection up" => input::unknown_type;
        "input.before-handshake", "§3.4",
            "a message before hello gets an error; hello can follow" => input::before_handshake;
        "takeover.old-socket-closed", "§5.3; v2 Errors and closes",
            "a second socket resuming a session closes the first" => sessions::old_socket_closed;
        "takeover.not-orphaned", "§5.3, §14.2",
            "the old socket closing after a takeover leaves the session with the new one" => sessions::not_orphaned;
        "ownership.other-agent", "§3.1",
            "a session cannot be resumed under another agent id" => sessions::other_agent;
        "ownership.other-principal", "§14.18",
            "another principal cannot resume a session" => sessions::other_principal;
        "session.leave", "§8.6",
            "leave is acknowledged with left" => sessions::leave;
        "client.exactly-once", "§6.5; v2 Replay, In-band repair",
            "tether's client gets every event once, in order, through cuts, a duplicate, a drop (v2)" => client::exactly_once;
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_grouped() {
        let defs = all();
        assert!(defs.len() >= 30, "{} checks", defs.len());
        let mut ids: Vec<&str> = defs.iter().map(|d| d.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), defs.len(), "duplicate ids");
        assert!(defs
            .iter()
            .all(|d| d.id.contains('.') && !d.section.is_empty()));
    }
}
