//! One behaviour suite, every store: each test below runs against the embedded memory
//! store, the embedded store kept on disk, a real `redis-server`, and (in one test,
//! all behaviours in turn) a real three-master Redis Cluster. Each behaviour takes
//! the narrowest seam it is about (`Verifications`, `JobLedger`, `Idempotency`,
//! `Registry`; `Store` where it spans them). A differential test then drives the
//! memory and Redis stores with the same random operations and compares what they
//! answer and hold; another drives the embedded store on disk, opens its directory
//! again, and compares what comes back with what it held.

use std::sync::Arc;
use std::time::Duration;

use otpd::config::RedisConfig;
use otpd::domain::clock::UnixMillis;
use otpd::domain::locale::Locale;
use otpd::domain::name::Name;
use otpd::domain::subscriber::{Device, MAX_DEVICES, Platform, Subscriber};
use otpd::domain::verification::{
    AckOutcome, CancelOutcome, CheckOutcome, Closing, EscalationCause, NewVerification, Policy,
    RequestedChannel, ResendRefusal, SendDetails, SendResult, SendState, Status, Verification,
};
use otpd::numbers::e164::E164;
use otpd::numbers::reader::{NumberKind, NumberLine, Region};
use otpd::policy::limiter::{CheckLimits, IssueLimits};
use otpd::secrets::code::{CodeLength, CodeMac, SealedCode};
use otpd::secrets::id::{ShardTag, VerificationId};
use otpd::store::embedded::DataDir;
use otpd::store::embedded::journal::Sync;
use otpd::store::redis::directory::RedisDirectory;
use otpd::store::redis::{Keys, Redis};
use otpd::store::{
    Idempotency, IdempotencyBegin, IssueOutcome, MemoryStore, PutSubscriber, RedisStore, Registry,
    Store, StoredResponse, Verifications,
};
use otpd_adapters::ChannelKind;
use otpd_adapters::smpp::directory::{MemoryDirectory, MessageDirectory, Noted};
use otpd_e2e::redis::{RedisCluster, RedisServer};

const T0: UnixMillis = UnixMillis(1_795_435_200_000);
const TTL: Duration = Duration::from_secs(600);
const RETENTION: Duration = Duration::from_secs(60);

fn at(secs: u64) -> UnixMillis {
    T0.plus(Duration::from_secs(secs))
}

fn candidate(to: u64, purpose: &str, n: u64) -> Verification {
    candidate_with(to, purpose, n, RequestedChannel::Auto, ChannelKind::Sms)
}

fn candidate_with(
    to: u64,
    purpose: &str,
    n: u64,
    channel: RequestedChannel,
    first: ChannelKind,
) -> Verification {
    let to = E164::from_digits_unchecked(to);
    let mut random = [0u8; 14];
    random[..8].copy_from_slice(&n.to_le_bytes());
    random[8..].copy_from_slice(&to.digits().to_le_bytes()[..6]);
    Verification::new(
        NewVerification {
            id: VerificationId::new(ShardTag::of(to), random),
            to,
            line: NumberLine {
                country: Region::parse("ES"),
                kind: NumberKind::Mobile,
            },
            purpose: Name::new(purpose),
            subject: Some("12345678Z".into()),
            client: None,
            locale: Locale::Es,
            channel,
            first_send: first,
            code_mac: CodeMac([n as u8; 32]),
            sealed_code: SealedCode(n),
            policy: Policy {
                ttl: TTL,
                code_length: CodeLength::new(6).unwrap(),
                max_attempts: 3,
                max_sends: 3,
                resend_cooldown: Duration::from_secs(30),
                escalate_after: Duration::from_secs(60),
            },
            match_code: None,
            challenge: None,
        },
        T0,
    )
}

fn push_candidate(to: u64, n: u64) -> Verification {
    candidate_with(to, "login", n, RequestedChannel::Auto, ChannelKind::Push)
}

async fn create(store: &dyn Store, v: Verification, now: UnixMillis) -> Verification {
    match store.issue(&v, now, &IssueLimits::NONE).await.unwrap() {
        IssueOutcome::Created => v,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// The embedded store kept in `dir`, holding what the directory held at `now`.
fn embedded_store(dir: &std::path::Path, now: UnixMillis) -> MemoryStore {
    let (data, recovered) = DataDir::open(dir, Sync::Write, now, Duration::from_secs(2)).unwrap();
    MemoryStore::durable(4, RETENTION, data, &recovered, now)
}

fn redis_store(urls: Vec<String>, cluster: bool, prefix: &str) -> RedisStore {
    let config = RedisConfig {
        urls,
        cluster,
        prefix: prefix.into(),
        partitions: 16,
        ..RedisConfig::default()
    };
    RedisStore::new(
        Redis::new(&config).unwrap(),
        Keys::new(
            prefix,
            16,
            otpd::secrets::code::CodeKeys::derive(b"a test secret, thirty-two bytes long")
                .pseudonyms(),
        ),
        RETENTION,
    )
}

// ---- the behaviours ----

async fn issue_dedupes_by_destination_and_purpose(store: &dyn Store) {
    let first = create(store, candidate(34600000001, "login", 1), T0).await;
    match store
        .issue(&candidate(34600000001, "login", 2), T0, &IssueLimits::NONE)
        .await
        .unwrap()
    {
        IssueOutcome::Refused {
            existing,
            refusal,
            expires_at,
        } => {
            assert_eq!(existing, first.id);
            assert_eq!(
                refusal,
                ResendRefusal::Cooldown {
                    retry_after: Duration::from_secs(30)
                }
            );
            assert_eq!(expires_at, first.expires_at);
        }
        other => panic!("{other:?}"),
    }
    // 29.001 s later: the wait rounds up to a whole second.
    match store
        .issue(
            &candidate(34600000001, "login", 2),
            T0.plus(Duration::from_millis(29_001)),
            &IssueLimits::NONE,
        )
        .await
        .unwrap()
    {
        IssueOutcome::Refused { refusal, .. } => assert_eq!(
            refusal,
            ResendRefusal::Cooldown {
                retry_after: Duration::from_secs(1)
            }
        ),
        other => panic!("{other:?}"),
    }
    match store
        .issue(
            &candidate(34600000001, "login", 3),
            at(30),
            &IssueLimits::NONE,
        )
        .await
        .unwrap()
    {
        IssueOutcome::Resent(v) => {
            assert_eq!(v.id, first.id);
            assert_eq!(v.sealed_code, first.sealed_code, "same code");
            assert_eq!(v.sends().len(), 2);
            assert_eq!(v.sends()[1].queued_at, at(30));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.issue(&candidate(34600000001, "login", 4), at(60), &IssueLimits::NONE).await.unwrap(),
        IssueOutcome::Resent(v) if v.sends().len() == 3
    ));
    assert!(matches!(
        store
            .issue(
                &candidate(34600000001, "login", 5),
                at(90),
                &IssueLimits::NONE
            )
            .await
            .unwrap(),
        IssueOutcome::Refused {
            refusal: ResendRefusal::MaxSends,
            ..
        }
    ));
    create(store, candidate(34600000001, "signup", 6), T0).await;
    create(store, candidate(34600000002, "login", 7), T0).await;
    // Once expired, the number gets a new verification.
    create(store, candidate(34600000001, "login", 8), at(600)).await;
}

/// A subject's verifications, for an operator: every client's, newest first,
/// bounded, never another subject's; a resend adds none.
async fn a_subjects_verifications_are_found_newest_first(store: &dyn Store) {
    let subject = "12345678Z";
    let mut made = Vec::new();
    // Different numbers (so different shards or partitions), clients and purposes.
    for (k, (to, purpose, client)) in [
        (34_600_000_001u64, "login", None),
        (34_600_000_002, "login", Some("backend-b")),
        (447_700_900_003, "sign", None),
        (34_600_000_001, "sign", Some("backend-b")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut v = candidate(to, purpose, 100 + k as u64);
        v.client = client.map(Name::new);
        v.created_at = at(10 * k as u64);
        v.expires_at = v.created_at.plus(TTL);
        made.push(create(store, v, at(10 * k as u64)).await.id);
    }
    let mut other = candidate(34_600_000_009, "login", 200);
    other.subject = Some("X1234567L".into());
    create(store, other, at(45)).await;
    // A resend of the first: the same verification, not a new one.
    match store
        .issue(
            &candidate(34_600_000_001, "login", 300),
            at(50),
            &IssueLimits::NONE,
        )
        .await
        .unwrap()
    {
        IssueOutcome::Resent(v) => assert_eq!(v.id, made[0]),
        other => panic!("expected a resend, got {other:?}"),
    }

    let newest_first: Vec<_> = made.iter().rev().copied().collect();
    let found = store.of_subject(subject, 10).await.unwrap();
    let ids: Vec<_> = found.iter().map(|v| v.id).collect();
    assert_eq!(ids, newest_first);
    assert!(found.iter().all(|v| v.subject.as_deref() == Some(subject)));
    assert_eq!(
        found[0],
        store.get(&found[0].id).await.unwrap().unwrap(),
        "the records as held"
    );
    let two: Vec<_> = store
        .of_subject(subject, 2)
        .await
        .unwrap()
        .iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(two, newest_first[..2]);
    assert!(store.of_subject("Y0000000Z", 10).await.unwrap().is_empty());
    assert!(store.of_subject(subject, 0).await.unwrap().is_empty());
    let other: Vec<_> = store.of_subject("X1234567L", 10).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].to, E164::from_digits_unchecked(34_600_000_009));
}

async fn each_client_has_its_own_verification(store: &dyn Store) {
    let mut a = candidate(34600000001, "login", 1);
    a.client = Some(Name::new("sede"));
    let mut b = candidate(34600000001, "login", 2);
    b.client = Some(Name::new("bank"));
    create(store, a.clone(), T0).await;
    create(store, b.clone(), T0).await;
    create(store, candidate(34600000001, "login", 3), T0).await;
    let mut again = candidate(34600000001, "login", 4);
    again.client = Some(Name::new("sede"));
    assert!(matches!(
        store.issue(&again, T0, &IssueLimits::NONE).await.unwrap(),
        IssueOutcome::Refused { existing, .. } if existing == a.id
    ));
    // Another client's (or no client's) check finds nothing and counts nothing.
    assert!(
        store
            .check(&a.id, &a.code_mac, Some("bank"), T0, &CheckLimits::NONE)
            .await
            .unwrap()
            .into_result()
            .is_none()
    );
    assert!(
        store
            .check(&a.id, &a.code_mac, None, T0, &CheckLimits::NONE)
            .await
            .unwrap()
            .into_result()
            .is_none()
    );
    assert!(
        store
            .close(&a.id, Some("bank"), Closing::Cancel, T0)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.get(&a.id).await.unwrap().unwrap().attempts_left(), 3);
    let r = store
        .check(&a.id, &a.code_mac, Some("sede"), T0, &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Approved);
}

async fn a_final_verification_is_replaced_in_the_dedupe_index(store: &dyn Store) {
    let first = create(store, candidate(34600000001, "login", 1), T0).await;
    let r = store
        .check(&first.id, &first.code_mac, None, T0, &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Approved);
    let second = create(store, candidate(34600000001, "login", 2), T0).await;
    assert!(store.get(&first.id).await.unwrap().is_some());
    assert!(matches!(
        store.issue(&candidate(34600000001, "login", 3), T0, &IssueLimits::NONE).await.unwrap(),
        IssueOutcome::Refused { existing, .. } if existing == second.id
    ));
}

async fn check_compares_and_counts(store: &dyn Store) {
    let v = create(store, candidate(34600000001, "login", 1), T0).await;
    let wrong = CodeMac([0xEE; 32]);
    let r = store
        .check(&v.id, &wrong, None, T0, &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Wrong { attempts_left: 2 });
    assert_eq!(r.attempts_left, 2);
    assert_eq!(r.to, v.to);
    assert_eq!(r.country, Region::parse("ES"));
    assert_eq!(r.subject.as_deref(), Some("12345678Z"));
    store
        .check(&v.id, &wrong, None, T0, &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result();
    let r = store
        .check(&v.id, &wrong, None, at(1), &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Locked);
    assert_eq!(r.attempts_left, 0);
    let r = store
        .check(&v.id, &v.code_mac, None, at(2), &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Locked, "locked is final");
    let got = store.get(&v.id).await.unwrap().unwrap();
    assert_eq!(got.status(at(2)), Status::Locked);
    assert_eq!(got.state_changed_at(), at(1));

    let v = create(store, candidate(34600000002, "login", 2), T0).await;
    let r = store
        .check(&v.id, &v.code_mac, None, at(5), &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Approved);
    let r = store
        .check(&v.id, &v.code_mac, None, at(6), &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::AlreadyApproved);

    let v = create(store, candidate(34600000003, "login", 3), T0).await;
    let r = store
        .check(&v.id, &v.code_mac, None, at(600), &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Expired);

    let unknown = VerificationId::new(ShardTag(9), [9; 14]);
    assert!(
        store
            .check(&unknown, &wrong, None, T0, &CheckLimits::NONE)
            .await
            .unwrap()
            .into_result()
            .is_none()
    );
    assert!(store.get(&unknown).await.unwrap().is_none());
}

async fn concurrent_checks_approve_once(store: Arc<dyn Store>) {
    let v = create(&*store, candidate(34600000001, "login", 1), T0).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            let (id, mac) = (v.id, v.code_mac);
            tokio::spawn(async move {
                store
                    .check(&id, &mac, None, T0, &CheckLimits::NONE)
                    .await
                    .unwrap()
                    .into_result()
                    .unwrap()
            })
        })
        .collect();
    let mut approved = 0;
    for t in tasks {
        match t.await.unwrap().outcome {
            CheckOutcome::Approved => approved += 1,
            CheckOutcome::AlreadyApproved => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(approved, 1);
    // Many issues for one number at once: one is created, the others refer to it.
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .issue(
                        &candidate(34600000009, "login", 100 + n),
                        T0,
                        &IssueLimits::NONE,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), IssueOutcome::Created) {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

async fn close_cancels_or_locks_once(store: &dyn Store) {
    let v = create(store, candidate(34600000001, "login", 1), T0).await;
    let (o, got) = store
        .close(&v.id, None, Closing::Cancel, at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o, CancelOutcome::Canceled);
    assert_eq!(got.status(at(1)), Status::Canceled);
    let (o, _) = store
        .close(&v.id, None, Closing::Cancel, at(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o, CancelOutcome::AlreadyCanceled);
    let (o, _) = store
        .close(&v.id, None, Closing::Lock, at(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o, CancelOutcome::Final(Status::Canceled));
    let r = store
        .check(&v.id, &v.code_mac, None, at(3), &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.outcome, CheckOutcome::Canceled);

    let v = create(store, candidate(34600000002, "login", 2), T0).await;
    let (o, got) = store
        .close(&v.id, None, Closing::Lock, at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o, CancelOutcome::Final(Status::Locked));
    assert_eq!(got.status(at(1)), Status::Locked);
    let v = create(store, candidate(34600000003, "login", 3), T0).await;
    let (o, _) = store
        .close(&v.id, None, Closing::Cancel, at(600))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o, CancelOutcome::Final(Status::Expired));
    let unknown = VerificationId::new(ShardTag(9), [9; 14]);
    assert!(
        store
            .close(&unknown, None, Closing::Cancel, T0)
            .await
            .unwrap()
            .is_none()
    );
}

async fn sends_and_reports_are_recorded_once(store: &dyn Store) {
    let v = create(store, candidate(34600000001, "login", 1), T0).await;
    let details = SendDetails {
        carrier: Some("movistar".into()),
        route: Some("+34".into()),
        failovers: Default::default(),
        encoding: Some(otpd_adapters::smpp::encoding::Alphabet::Gsm7),
        segments: 1,
        receipt_due: T0.plus(TTL + Duration::from_secs(900)).into(),
    };
    let sent = SendResult::Sent {
        reference: "m-1".into(),
    };
    assert!(
        store
            .record_send(&v.id, 1, sent.clone(), Some(details.clone()), at(1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_send(&v.id, 1, sent.clone(), None, at(2))
            .await
            .unwrap(),
        "once"
    );
    assert!(
        !store
            .record_send(&v.id, 2, sent.clone(), None, at(2))
            .await
            .unwrap(),
        "no send 2"
    );
    assert!(
        !store
            .record_send(&v.id, 0, sent.clone(), None, at(2))
            .await
            .unwrap()
    );
    let reported = store
        .record_report(&v.id, 1, SendState::Delivered, None, at(3))
        .await
        .unwrap()
        .expect("the first report is recorded");
    // What the report left, as its event tells it: no read of its own.
    assert_eq!(reported.sends()[0].state, SendState::Delivered);
    assert_eq!(Some(&reported), store.get(&v.id).await.unwrap().as_ref());
    assert!(
        store
            .record_report(&v.id, 1, SendState::Undeliverable, Some("x".into()), at(4))
            .await
            .unwrap()
            .is_none(),
        "the first report stands"
    );
    let got = store.get(&v.id).await.unwrap().unwrap();
    let s = &got.sends()[0];
    assert_eq!(s.state, SendState::Delivered);
    assert_eq!(s.answered_at, Some(at(1)));
    assert_eq!(s.reported_at, Some(at(3)));
    assert_eq!(s.reference.as_deref(), Some("m-1"));
    assert_eq!(s.details.as_ref(), Some(&details));

    // A report that overtakes the channel's answer is kept.
    let v = create(store, candidate(34600000002, "login", 2), T0).await;
    assert!(
        store
            .record_report(
                &v.id,
                1,
                SendState::Undeliverable,
                Some("absent subscriber".into()),
                at(1)
            )
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .record_send(&v.id, 1, sent, None, at(2))
            .await
            .unwrap()
    );
    let got = store.get(&v.id).await.unwrap().unwrap();
    assert_eq!(got.sends()[0].state, SendState::Undeliverable);
    assert_eq!(got.sends()[0].error.as_deref(), Some("absent subscriber"));
    assert_eq!(got.delivery_state(), SendState::Undeliverable);

    // A failed send takes no report.
    let v = create(store, candidate(34600000003, "login", 3), T0).await;
    let failed = SendResult::Failed {
        error: "throttled".into(),
    };
    assert!(
        store
            .record_send(&v.id, 1, failed, None, at(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_report(&v.id, 1, SendState::Delivered, None, at(2))
            .await
            .unwrap()
            .is_none()
    );
    let got = store.get(&v.id).await.unwrap().unwrap();
    assert_eq!(got.sends()[0].state, SendState::Failed);
    assert_eq!(got.sends()[0].error.as_deref(), Some("throttled"));

    let unknown = VerificationId::new(ShardTag(9), [9; 14]);
    assert!(
        !store
            .record_send(
                &unknown,
                1,
                SendResult::Expired {
                    error: "late".into()
                },
                None,
                T0
            )
            .await
            .unwrap()
    );
    assert!(
        store.get(&unknown).await.unwrap().is_none(),
        "nothing made up"
    );
}

async fn push_is_acknowledged_or_escalated_once(store: &dyn Store) {
    let v = create(store, push_candidate(34600000001, 1), T0).await;
    assert_eq!(v.escalate_at(), Some(at(60)));
    assert!(
        store
            .escalate(&v.id, EscalationCause::Timeout, at(59))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.due_escalations(at(59), 10).await.unwrap().is_empty());
    assert_eq!(store.due_escalations(at(60), 10).await.unwrap(), vec![v.id]);
    assert_eq!(
        store.due_escalations(at(60), 10).await.unwrap(),
        vec![v.id],
        "listed until escalated: a pass cut short between the two loses nothing"
    );
    let got = store
        .escalate(&v.id, EscalationCause::Timeout, at(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.sends().len(), 2);
    assert_eq!(got.sends()[1].channel, ChannelKind::Sms);
    assert_eq!(got.sends()[1].escalated, Some(EscalationCause::Timeout));
    assert_eq!(got.escalate_at(), None);
    assert!(
        store.due_escalations(at(600), 10).await.unwrap().is_empty(),
        "escalated: off the list"
    );
    assert!(
        store
            .escalate(&v.id, EscalationCause::PushFailed, at(61))
            .await
            .unwrap()
            .is_none()
    );
    // After the escalation, `auto` re-sends go where the code went last: SMS.
    match store
        .issue(&push_candidate(34600000001, 2), at(100), &IssueLimits::NONE)
        .await
        .unwrap()
    {
        IssueOutcome::Resent(r) => assert_eq!(r.sends()[2].channel, ChannelKind::Sms),
        other => panic!("{other:?}"),
    }

    // Acknowledged first: no escalation, the push counts as delivered.
    let v = create(store, push_candidate(34600000002, 3), T0).await;
    let (o, got) = store.acknowledge(&v.id, at(5)).await.unwrap().unwrap();
    assert_eq!(o, AckOutcome::Acknowledged);
    assert_eq!(got.sends()[0].state, SendState::Delivered);
    assert_eq!(got.acknowledged_at(), Some(at(5)));
    let (o, _) = store.acknowledge(&v.id, at(6)).await.unwrap().unwrap();
    assert_eq!(o, AckOutcome::AlreadyAcknowledged);
    assert!(
        store
            .escalate(&v.id, EscalationCause::Timeout, at(60))
            .await
            .unwrap()
            .is_none()
    );
    // The index may still list it (a store need not look it up there); escalating
    // it does nothing, and takes it off.
    for id in store.due_escalations(at(600), 10).await.unwrap() {
        assert!(
            store
                .escalate(&id, EscalationCause::Timeout, at(600))
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(store.due_escalations(at(600), 10).await.unwrap().is_empty());

    // A failed push escalates at once.
    let v = create(store, push_candidate(34600000003, 4), T0).await;
    let got = store
        .escalate(&v.id, EscalationCause::PushFailed, at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.sends()[1].escalated, Some(EscalationCause::PushFailed));

    // SMS only: nothing to acknowledge; a final one tells its status.
    let v = create(store, candidate(34600000004, "login", 5), T0).await;
    let (o, _) = store.acknowledge(&v.id, at(1)).await.unwrap().unwrap();
    assert_eq!(o, AckOutcome::NotPush);
    store
        .check(&v.id, &v.code_mac, None, at(2), &CheckLimits::NONE)
        .await
        .unwrap()
        .into_result();
    let (o, _) = store.acknowledge(&v.id, at(3)).await.unwrap().unwrap();
    assert_eq!(o, AckOutcome::Final(Status::Approved));
    let unknown = VerificationId::new(ShardTag(9), [9; 14]);
    assert!(store.acknowledge(&unknown, T0).await.unwrap().is_none());
    assert!(
        store
            .escalate(&unknown, EscalationCause::PushFailed, T0)
            .await
            .unwrap()
            .is_none()
    );
}

async fn due_escalations_are_bounded(store: &dyn Store) {
    for i in 0..20 {
        create(store, push_candidate(34600000100 + i, i), T0).await;
    }
    let first = store.due_escalations(at(60), 8).await.unwrap();
    assert_eq!(first.len(), 8);
    for id in &first {
        assert!(
            store
                .escalate(id, EscalationCause::Timeout, at(60))
                .await
                .unwrap()
                .is_some()
        );
    }
    let rest = store.due_escalations(at(60), 100).await.unwrap();
    assert_eq!(rest.len(), 12);
    assert!(first.iter().all(|id| !rest.contains(id)));
}

async fn idempotency_records(store: &dyn Idempotency) {
    let ttl = Duration::from_secs(3600);
    let (a, b) = ([1u8; 32], [2u8; 32]);
    assert_eq!(
        store.idempotency_begin("k", &a, T0, ttl).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        store.idempotency_begin("k", &a, T0, ttl).await.unwrap(),
        IdempotencyBegin::InProgress
    );
    assert_eq!(
        store.idempotency_begin("k", &b, T0, ttl).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    let response = StoredResponse {
        status: 201,
        body: bytes::Bytes::from_static(b"{\"id\":\"vf_1\",\"bin\":\"\x00\xff\"}"),
    };
    store
        .idempotency_finish("k", &b, response.clone(), at(1), ttl)
        .await
        .unwrap();
    assert_eq!(
        store.idempotency_begin("k", &a, at(1), ttl).await.unwrap(),
        IdempotencyBegin::InProgress,
        "another request's fingerprint finishes nothing"
    );
    store
        .idempotency_finish("k", &a, response.clone(), at(1), ttl)
        .await
        .unwrap();
    assert_eq!(
        store.idempotency_begin("k", &a, at(2), ttl).await.unwrap(),
        IdempotencyBegin::Replay(response.clone())
    );
    assert_eq!(
        store.idempotency_begin("k", &b, at(2), ttl).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    // Abandoned: a retry may run.
    assert_eq!(
        store.idempotency_begin("j", &a, T0, ttl).await.unwrap(),
        IdempotencyBegin::Started
    );
    store.idempotency_abandon("j", &b).await.unwrap();
    assert_eq!(
        store.idempotency_begin("j", &a, T0, ttl).await.unwrap(),
        IdempotencyBegin::InProgress
    );
    store.idempotency_abandon("j", &a).await.unwrap();
    assert_eq!(
        store.idempotency_begin("j", &a, T0, ttl).await.unwrap(),
        IdempotencyBegin::Started
    );
    // Lapsed: as good as new.
    assert_eq!(
        store
            .idempotency_begin("k", &b, at(1).plus(ttl), ttl)
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
}

fn subscriber(subject: &str, phone: u64) -> Subscriber {
    Subscriber {
        subject: subject.into(),
        phone: E164::from_digits_unchecked(phone),
        locale: Some(Locale::Ca),
        devices: vec![],
        updated_at: T0,
        contrast: None,
    }
}

fn device(platform: Platform, token: &str) -> Device {
    Device {
        platform,
        token: token.into(),
        app: "es.gob.clave".into(),
        added_at: T0,
        key: None,
    }
}

async fn registry_keeps_one_subject_per_number(store: &dyn Registry) {
    let a = subscriber("12345678Z", 34600000001);
    assert_eq!(
        store.put_subscriber(a.clone()).await.unwrap(),
        PutSubscriber::Created
    );
    assert_eq!(
        store.get_subscriber("12345678Z").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store
            .put_subscriber(subscriber("X1234567L", 34600000001))
            .await
            .unwrap(),
        PutSubscriber::PhoneTaken {
            by: "12345678Z".into()
        }
    );
    assert_eq!(store.get_subscriber("X1234567L").await.unwrap(), None);
    // Moving to another number frees the old one.
    let mut moved = subscriber("12345678Z", 34600000002);
    moved.locale = None;
    assert_eq!(
        store.put_subscriber(moved.clone()).await.unwrap(),
        PutSubscriber::Replaced
    );
    assert_eq!(
        store.get_subscriber("12345678Z").await.unwrap(),
        Some(moved)
    );
    assert_eq!(
        store
            .put_subscriber(subscriber("X1234567L", 34600000001))
            .await
            .unwrap(),
        PutSubscriber::Created
    );
    assert!(store.delete_subscriber("12345678Z").await.unwrap());
    assert!(!store.delete_subscriber("12345678Z").await.unwrap());
    assert_eq!(store.get_subscriber("12345678Z").await.unwrap(), None);
    assert_eq!(
        store
            .put_subscriber(subscriber("Y7654321G", 34600000002))
            .await
            .unwrap(),
        PutSubscriber::Created,
        "a deleted subject's number is free"
    );
}

async fn registry_devices(store: &dyn Registry) {
    assert!(
        store
            .add_device("nobody", device(Platform::Fcm, "t"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .remove_device("nobody", Platform::Fcm, "t")
            .await
            .unwrap()
            .is_none()
    );
    store
        .put_subscriber(subscriber("12345678Z", 34600000001))
        .await
        .unwrap();
    let (added, s) = store
        .add_device("12345678Z", device(Platform::Fcm, "tok:1"))
        .await
        .unwrap()
        .unwrap();
    assert!(added);
    assert_eq!(s.devices.len(), 1);
    // The same token again refreshes it in place.
    let mut again = device(Platform::Fcm, "tok:1");
    again.app = "es.gob.clave.beta".into();
    let (added, s) = store.add_device("12345678Z", again).await.unwrap().unwrap();
    assert!(added);
    assert_eq!(s.devices.len(), 1);
    assert_eq!(&*s.devices[0].app, "es.gob.clave.beta");
    // The same token on another platform is another device.
    store
        .add_device("12345678Z", device(Platform::Hms, "tok:1"))
        .await
        .unwrap();
    for i in 2..MAX_DEVICES {
        store
            .add_device("12345678Z", device(Platform::Fcm, &format!("tok:{i}")))
            .await
            .unwrap();
    }
    let (added, s) = store
        .add_device("12345678Z", device(Platform::Fcm, "one-too-many"))
        .await
        .unwrap()
        .unwrap();
    assert!(!added);
    assert_eq!(s.devices.len(), MAX_DEVICES);
    assert_eq!(
        store
            .remove_device("12345678Z", Platform::Fcm, "tok:1")
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        store
            .remove_device("12345678Z", Platform::Fcm, "tok:1")
            .await
            .unwrap(),
        Some(false)
    );
    let s = store.get_subscriber("12345678Z").await.unwrap().unwrap();
    assert_eq!(s.devices.len(), MAX_DEVICES - 1);
    assert_eq!(s.devices[0].platform, Platform::Hms, "order kept");
}

// ---- one suite, three stores ----

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = otpd::store::MemoryStore::new(4, super::RETENTION);
                    super::$name(&store).await;
                }
            )*
        }

        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::embedded_store(dir.path(), super::T0);
                    super::$name(&store).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = super::RedisServer::start();
                    let store = super::redis_store(vec![server.url()], false, "otpd");
                    super::$name(&store).await;
                }
            )*
        }

        /// A three-master cluster is slow to form: one, every behaviour in turn,
        /// each under its own key prefix.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_runs_every_behaviour() {
            let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3)).await.unwrap();
            $(
                let store = redis_store(cluster.urls(), true, concat!("t:", stringify!($name)));
                $name(&store).await;
            )*
            let store: Arc<dyn Store> = Arc::new(redis_store(cluster.urls(), true, "t:concurrent"));
            concurrent_checks_approve_once(store).await;
            // The keys are spread over all three masters.
            for node in &cluster.nodes {
                let keys: usize = node.cli(&["DBSIZE"]).trim().parse().unwrap();
                assert!(keys > 0, "a master holds no keys");
            }
        }
    };
}

contract!(
    issue_dedupes_by_destination_and_purpose,
    a_subjects_verifications_are_found_newest_first,
    each_client_has_its_own_verification,
    a_final_verification_is_replaced_in_the_dedupe_index,
    check_compares_and_counts,
    close_cancels_or_locks_once,
    sends_and_reports_are_recorded_once,
    push_is_acknowledged_or_escalated_once,
    due_escalations_are_bounded,
    idempotency_records,
    registry_keeps_one_subject_per_number,
    registry_devices,
);

#[tokio::test]
async fn memory_concurrent_checks_approve_once() {
    concurrent_checks_approve_once(Arc::new(MemoryStore::new(4, RETENTION))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_checks_approve_once() {
    let server = RedisServer::start();
    concurrent_checks_approve_once(Arc::new(redis_store(vec![server.url()], false, "otpd"))).await;
}

// ---- the message directory: memory and Redis ----

/// Notes are found under every part's id, in either base when asked, one at a time
/// or in a batch (in order, `None` where nothing was noted).
async fn directory_finds_what_was_noted(directory: &dyn MessageDirectory) {
    let noted = Noted {
        verification_id: "vf_1".into(),
        send: 1,
        ids: vec!["a01f".into(), "a020".into()],
    };
    directory
        .note("movistar", noted.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        directory.find("movistar", "00A020", false).await.unwrap(),
        Some(noted.clone())
    );
    assert_eq!(
        directory.find("vodafone", "a01f", false).await.unwrap(),
        None,
        "per carrier"
    );
    // 0xa01f = 40991, in decimal: only with the other base.
    assert_eq!(
        directory.find("movistar", "40991", false).await.unwrap(),
        None
    );
    assert_eq!(
        directory.find("movistar", "40991", true).await.unwrap(),
        Some(noted.clone())
    );
    let ids: Vec<String> = ["a01f", "nothing", "40992", "A020"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        directory.find_many("movistar", &ids, false).await.unwrap(),
        vec![Some(noted.clone()), None, None, Some(noted.clone())]
    );
    assert_eq!(
        directory.find_many("movistar", &ids, true).await.unwrap(),
        vec![Some(noted.clone()), None, Some(noted.clone()), Some(noted)]
    );
    assert!(
        directory
            .find_many("movistar", &[], true)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn memory_directory_finds_what_was_noted() {
    directory_finds_what_was_noted(&MemoryDirectory::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_directory_finds_what_was_noted() {
    let server = RedisServer::start();
    let config = RedisConfig {
        urls: vec![server.url()],
        ..RedisConfig::default()
    };
    let keys = Keys::new(
        "otpd",
        16,
        otpd::secrets::code::CodeKeys::derive(b"a test secret, thirty-two bytes long").pseudonyms(),
    );
    let directory = RedisDirectory::start(Redis::new(&config).unwrap(), keys);
    directory_finds_what_was_noted(&directory).await;
}

// ---- differential: the same random operations on memory and Redis ----

/// xorshift64*: a fixed, seedable sequence, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random operation on `store`; what it answered, as text.
async fn random_op(
    store: &dyn Store,
    rng: &mut Rng,
    ids: &mut Vec<(VerificationId, CodeMac, Option<Name>)>,
    n: u64,
    now: UnixMillis,
) -> String {
    let pick = |rng: &mut Rng, ids: &Vec<(VerificationId, CodeMac, Option<Name>)>| {
        if ids.is_empty() || rng.below(10) == 0 {
            (
                VerificationId::new(ShardTag(7), [7; 14]),
                CodeMac([7; 32]),
                None,
            )
        } else {
            ids[rng.below(ids.len() as u64) as usize]
        }
    };
    match rng.below(9) {
        0 | 1 => {
            let channel = [
                RequestedChannel::Auto,
                RequestedChannel::Sms,
                RequestedChannel::Push,
            ][rng.below(3) as usize];
            let first = if channel == RequestedChannel::Sms || rng.below(2) == 0 {
                ChannelKind::Sms
            } else {
                ChannelKind::Push
            };
            let mut c = candidate_with(
                34600000000 + rng.below(3),
                ["login", "sign"][rng.below(2) as usize],
                n,
                channel,
                first,
            );
            c.client = [None, Some(Name::new("a"))][rng.below(2) as usize];
            let c = Verification::new(
                NewVerification {
                    id: c.id,
                    to: c.to,
                    line: c.line,
                    purpose: c.purpose,
                    subject: c.subject.clone(),
                    client: c.client,
                    locale: c.locale,
                    channel,
                    first_send: first,
                    code_mac: c.code_mac,
                    sealed_code: c.sealed_code,
                    policy: Policy {
                        ttl: TTL,
                        code_length: CodeLength::new(6).unwrap(),
                        max_attempts: 3,
                        max_sends: 3,
                        resend_cooldown: Duration::from_secs(30),
                        escalate_after: Duration::from_secs(60),
                    },
                    match_code: None,
                    challenge: None,
                },
                now,
            );
            let out = store.issue(&c, now, &IssueLimits::NONE).await.unwrap();
            if matches!(out, IssueOutcome::Created) {
                ids.push((c.id, c.code_mac, c.client));
            }
            format!("issue {out:?}")
        }
        2 | 3 => {
            let (id, mac, client) = pick(rng, ids);
            let mac = if rng.below(3) == 0 {
                mac
            } else {
                CodeMac([0xEE; 32])
            };
            let client = if rng.below(8) == 0 {
                Some("b")
            } else {
                client.as_deref()
            };
            format!(
                "check {:?}",
                store
                    .check(&id, &mac, client, now, &CheckLimits::NONE)
                    .await
                    .unwrap()
                    .into_result()
            )
        }
        4 => {
            let (id, _, client) = pick(rng, ids);
            let how = [Closing::Cancel, Closing::Lock][rng.below(2) as usize];
            format!(
                "close {:?}",
                store.close(&id, client.as_deref(), how, now).await.unwrap()
            )
        }
        5 => {
            let (id, ..) = pick(rng, ids);
            let send = rng.below(4) as u8;
            let result = match rng.below(3) {
                0 => SendResult::Sent {
                    reference: format!("r{n}"),
                },
                1 => SendResult::Failed {
                    error: format!("e{n}"),
                },
                _ => SendResult::Expired {
                    error: "late".into(),
                },
            };
            format!(
                "send {:?}",
                store
                    .record_send(&id, send, result, None, now)
                    .await
                    .unwrap()
            )
        }
        6 => {
            let (id, ..) = pick(rng, ids);
            let state = [
                SendState::Delivered,
                SendState::Undeliverable,
                SendState::Rejected,
            ][rng.below(3) as usize];
            let error = (rng.below(2) == 0).then(|| format!("why{n}"));
            format!(
                "report {:?}",
                store
                    .record_report(&id, rng.below(4) as u8, state, error, now)
                    .await
                    .unwrap()
            )
        }
        7 => {
            let (id, ..) = pick(rng, ids);
            format!("ack {:?}", store.acknowledge(&id, now).await.unwrap())
        }
        _ => {
            let (id, ..) = pick(rng, ids);
            let cause =
                [EscalationCause::Timeout, EscalationCause::PushFailed][rng.below(2) as usize];
            format!(
                "escalate {:?}",
                store.escalate(&id, cause, now).await.unwrap()
            )
        }
    }
}

#[tokio::test]
async fn redis_answers_and_holds_what_memory_does() {
    let server = RedisServer::start();
    let mut seen = std::collections::HashSet::new();
    for seed in 1..=60u64 {
        // Records outlive the run in both: when a record goes is the one thing the
        // two decide by different clocks (memory by otpd's, Redis by its own).
        let day = Duration::from_secs(86_400);
        let memory = MemoryStore::new(4, day);
        let prefix = format!("diff{seed}");
        let redis = RedisStore::new(
            Redis::new(&RedisConfig {
                urls: vec![server.url()],
                ..RedisConfig::default()
            })
            .unwrap(),
            Keys::new(
                &prefix,
                16,
                otpd::secrets::code::CodeKeys::derive(b"a test secret, thirty-two bytes long")
                    .pseudonyms(),
            ),
            day,
        );
        let (mut rm, mut rr) = (Rng(seed * 0x9E37_79B9), Rng(seed * 0x9E37_79B9));
        let (mut im, mut ir) = (Vec::new(), Vec::new());
        let mut now = T0;
        for n in 0..40u64 {
            let a = random_op(&memory, &mut rm, &mut im, n, now).await;
            let b = random_op(&redis, &mut rr, &mut ir, n, now).await;
            assert_eq!(a, b, "seed {seed}, step {n}");
            for kind in SEEN {
                if a.contains(kind) {
                    seen.insert(kind);
                }
            }
            for (id, ..) in &im {
                assert_eq!(
                    memory.get(id).await.unwrap(),
                    redis.get(id).await.unwrap(),
                    "seed {seed}, step {n}: {id}"
                );
            }
            assert_eq!(
                memory.of_subject("12345678Z", 50).await.unwrap(),
                redis.of_subject("12345678Z", 50).await.unwrap(),
                "seed {seed}, step {n}: the subject's verifications"
            );
            now = now.plus(Duration::from_secs(rm.below(90)));
            rr.next();
        }
    }
    // The runs went through every kind of answer, so agreeing meant something.
    let missing: Vec<_> = SEEN.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "never seen: {missing:?}");
}

const SEEN: [&str; 16] = [
    "issue Created",
    "issue Resent",
    "Cooldown",
    "MaxSends",
    "Approved",
    "Wrong",
    "Locked",
    "Expired",
    "AlreadyApproved",
    "Canceled",
    "AlreadyCanceled",
    "send true",
    "report Some",
    "Acknowledged",
    "NotPush",
    "escalate Some",
];

/// The embedded store on disk, driven by the random operations, then opened again
/// from its directory at each step's time: every verification, the escalations due
/// and the registry come back as they were held.
#[tokio::test]
async fn the_embedded_store_reopened_holds_what_it_held() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed * 0x9E37_79B9);
        let mut ids = Vec::new();
        let mut now = T0;
        let mut store = embedded_store(dir.path(), now);
        for n in 0..40u64 {
            random_op(&store, &mut rng, &mut ids, n, now).await;
            if n % 10 == 9 {
                // What has outlived its retention is gone from both (memory lets it
                // go lazily; the sweep makes it go now).
                store.sweep(now).await.unwrap();
                let held: Vec<_> = {
                    let mut held = Vec::new();
                    for (id, ..) in &ids {
                        held.push(store.get(id).await.unwrap());
                    }
                    held
                };
                // The list may keep disarmed entries until `escalate` looks at them;
                // what is still armed must come back.
                let mut due = Vec::new();
                for id in store.due_escalations(now.plus(TTL), 1000).await.unwrap() {
                    if let Some(v) = store.get(&id).await.unwrap()
                        && v.escalate_at().is_some()
                    {
                        due.push(id);
                    }
                }
                let of_subject = store.of_subject("12345678Z", 50).await.unwrap();
                drop(store);
                store = embedded_store(dir.path(), now);
                assert_eq!(
                    store.of_subject("12345678Z", 50).await.unwrap(),
                    of_subject,
                    "seed {seed}, step {n}: the subject's verifications"
                );
                for ((id, ..), before) in ids.iter().zip(&held) {
                    assert_eq!(
                        &store.get(id).await.unwrap(),
                        before,
                        "seed {seed}, step {n}: {id}"
                    );
                }
                let mut again = store.due_escalations(now.plus(TTL), 1000).await.unwrap();
                due.sort_by_key(|id| *id.as_bytes());
                again.sort_by_key(|id| *id.as_bytes());
                assert_eq!(again, due, "seed {seed}, step {n}: escalations");
            }
            now = now.plus(Duration::from_secs(rng.below(90)));
        }
    }
}

#[tokio::test]
async fn the_embedded_registry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = subscriber("12345678Z", 34600000001);
    a.contrast = Some(otpd::secrets::contrast::ContrastMac([9; 32]));
    a.devices = vec![
        device(Platform::Fcm, "tok-a"),
        device(Platform::Apns, "ab12"),
    ];
    let b = subscriber("X1234567L", 34600000002);
    {
        let store = embedded_store(dir.path(), T0);
        store.put_subscriber(a.clone()).await.unwrap();
        store.put_subscriber(b.clone()).await.unwrap();
        store
            .add_device("X1234567L", device(Platform::Hms, "hms-1"))
            .await
            .unwrap();
        assert!(store.delete_subscriber("X1234567L").await.unwrap());
        store.put_subscriber(b.clone()).await.unwrap();
        store
            .remove_device("12345678Z", Platform::Apns, "ab12")
            .await
            .unwrap();
    }
    let store = embedded_store(dir.path(), T0.plus(Duration::from_secs(86_400 * 30)));
    let mut want = a.clone();
    want.devices.truncate(1);
    assert_eq!(store.get_subscriber("12345678Z").await.unwrap(), Some(want));
    assert_eq!(store.get_subscriber("X1234567L").await.unwrap(), Some(b));
    // The number index came back too.
    assert_eq!(
        store
            .put_subscriber(subscriber("Y0000000Z", 34600000001))
            .await
            .unwrap(),
        PutSubscriber::PhoneTaken {
            by: "12345678Z".into()
        }
    );
}
