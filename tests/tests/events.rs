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
