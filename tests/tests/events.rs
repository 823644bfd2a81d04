//! What happens is told as typed events: a code sent, approved by its PIN, a
//! verification canceled — each once, with the number masked, never the code.

use otpd::events::EventKind;
use otpd_e2e::TestServer;

#[tokio::test]
async fn a_verifications_story_is_told_once_without_its_code() {
    let t = TestServer::start().await;
    let a = t.issue("+34600112233").await;
    let id = a["id"].as_str().unwrap().to_string();
    t.answered(&id).await;
    let code = t.code(&id, 1).await;
    let checked = t.check(&id, &code).await;
    assert_eq!(checked.body["status"], "approved", "{}", checked.text);
    // A second right code approves nothing more, and tells nothing more.
    t.check(&id, &code).await;

    let b = t.issue("+34600112244").await;
    let other = b["id"].as_str().unwrap().to_string();
    assert_eq!(
        t.delete(&format!("/v1/verifications/{other}")).await.status,
        200
    );
    t.delete(&format!("/v1/verifications/{other}")).await;

    let events = t.events.events();
    let of = |id: &str| t.told(id).iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(of(&id), [EventKind::Sent, EventKind::Approved]);
    // (Its send may be told before or after the cancel.)
    assert_eq!(
        of(&other)
            .iter()
            .filter(|k| **k == EventKind::Canceled)
            .count(),
        1
    );
    let sent = events.iter().find(|e| e.kind == EventKind::Sent).unwrap();
    assert_eq!(sent.data.channel, Some("sms"));
    assert_eq!(sent.data.carrier.as_deref(), Some("file"));
    assert_eq!(sent.data.to.as_deref(), Some("+34*******33"));
    for e in &events {
        let body = String::from_utf8(otpd::events::body("evt", e)).unwrap();
        assert!(!body.contains(&code), "a code in {body}");
        assert!(!body.contains("600112233"), "a whole number in {body}");
    }
    t.stop().await;
}

#[tokio::test]
async fn a_code_left_unused_is_told_expired_when_it_stops_working_and_only_then() {
    let t = TestServer::start().await;
    let unused = t.issue("+34600112233").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let approved = t.issue("+34600112244").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    t.answered(&unused).await;
    let code = t.code(&approved, 1).await;
    assert_eq!(t.check(&approved, &code).await.status, 200);
    // A minute before its end: nothing expired yet.
    t.clock.advance(std::time::Duration::from_secs(9 * 60));
    t.escalations_settled().await;
    assert!(!t.told(&unused).iter().any(|e| e.kind == EventKind::Expired));
    t.clock.advance(std::time::Duration::from_secs(61));
    t.escalations_settled().await;
    let expired: Vec<_> = t
        .told(&unused)
        .into_iter()
        .filter(|e| e.kind == EventKind::Expired)
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].data.status, Some("expired"));
    assert_eq!(expired[0].data.to.as_deref(), Some("+34*******33"));
    // The approved one ended before: it is never told expired.
    assert!(
        !t.told(&approved)
            .iter()
            .any(|e| e.kind == EventKind::Expired)
    );
    t.stop().await;
}

#[tokio::test]
async fn the_wrong_code_that_uses_up_the_last_attempt_tells_locked_once() {
    let t = TestServer::start().await;
    let id = t.issue("+34600112233").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    let wrong = if code.starts_with('0') { "1" } else { "0" }.repeat(code.len());
    let mut last = t.check(&id, &wrong).await;
    while last.body["status"] == "pending" {
        last = t.check(&id, &wrong).await;
    }
    assert_eq!(last.body["status"], "locked", "{}", last.text);
    // Checks on a locked verification tell nothing more.
    t.check(&id, &wrong).await;
    t.check(&id, &code).await;
    let locked: Vec<_> = t
        .told(&id)
        .into_iter()
        .filter(|e| e.kind == EventKind::Locked)
        .collect();
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert_eq!(locked[0].data.reason, Some("too_many_attempts"));
    t.stop().await;
}
