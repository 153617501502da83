//! Store mode: gaps the store cannot fill, sessions it lost.

use super::*;

#[test]
fn a_gap_the_store_cannot_fill_releases_the_holder_so_its_resume_reports_the_loss() {
    let now = t0();
    let mut s = Server::new(
        ServerConfig {
            external_store: true,
            ..cfg()
        },
        now,
    );
    let conn = ConnId(1);
    let sid = connect_v1(&mut s, now, conn);
    events(&mut s);
    let frame = |n: u64| {
        let body = format!(r#"{{"type":"message","content":"e{n}""#);
        Unsequenced {
            session: sid.clone(),
            kind: "message".into(),
            body,
            event_id: u128::from(n),
            timestamp: 1.0,
        }
        .into_recorded(n)
    };
    assert_eq!(
        s.handle_store_event(now, &sid, frame(1)),
        Ok(Ingest::Appended)
    );
    assert_eq!(
        s.handle_store_event(now, &sid, frame(1)),
        Ok(Ingest::Duplicate)
    );
    assert_eq!(
        s.handle_store_event(now, &sid, frame(5)),
        Ok(Ingest::Gap { expected: 2 })
    );
    assert!(s.handle_store_gap(now, &sid));
    let out = drain(&mut s, now);
    let texts = texts_of(&out, conn);
    assert!(
        texts.iter().any(|t| t.contains(r#""content":"e1""#)),
        "what it was owed goes out first: {texts:?}"
    );
    assert_eq!(close_of(&out, conn), Some((1012, "store_gap".into())));
    assert!(!s.handle_store_gap(now, &SessionId("other".into())));
}

#[test]
fn a_session_the_store_lost_closes_its_holder_after_what_it_was_owed() {
    let now = t0();
    let mut s = Server::new(
        ServerConfig {
            external_store: true,
            ..cfg()
        },
        now,
    );
    let conn = ConnId(1);
    let sid = connect_v1(&mut s, now, conn);
    events(&mut s);
    let first = Unsequenced {
        session: sid.clone(),
        kind: "message".into(),
        body: r#"{"type":"message","content":"e1""#.into(),
        event_id: 1,
        timestamp: 1.0,
    };
    assert_eq!(
        s.handle_store_event(now, &sid, first.into_recorded(1)),
        Ok(Ingest::Appended)
    );
    assert!(s.handle_store_lost(now, &sid));
    let out = drain(&mut s, now);
    let texts = texts_of(&out, conn);
    assert!(
        texts.iter().any(|t| t.contains(r#""content":"e1""#)),
        "what it was owed goes out first: {texts:?}"
    );
    assert_eq!(
        close_of(&out, conn),
        Some((crate::wire::close::SESSION_LOST, "session_lost".into()))
    );
    assert!(s.held_sessions().is_empty());
    assert!(!s.handle_store_lost(now, &sid), "held nowhere any more");
}
