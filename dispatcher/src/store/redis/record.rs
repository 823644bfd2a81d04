//! A verification as a Redis hash, and back. Pure: fields in, fields out.
//!
//! The scripts change single fields (state, attempts, one send's state), so every
//! field the lifecycle touches is a hash field of its own rather than part of one
//! serialised blob; a send's fields are numbered `<send><letter>` (`2s` is the second
//! send's state). Names are short because a national dataset holds millions of them.
//!
//! | field | meaning | | field | meaning |
//! | --- | --- | --- | --- | --- |
//! | `to` | number's digits | | `st` | `p` `a` `d` `c` `l` (pending, approved, denied, canceled, locked) |
//! | `cc` | country | | `sa` | when `st` last changed |
//! | `lk` | kind of line | | `at` / `ma` | attempts made / allowed |
//! | `pu` | purpose | | `ms` | sends allowed |
//! | `su` | subject | | `cd` | resend cooldown, ms |
//! | `cl` | API client | | `mc` | match code |
//! | `lo` | locale | | `ea` | escalation due at |
//! | `ch` | channel asked for | | `ak` | app acknowledged at |
//! | `cn` | code length | | `n` | sends made |
//! | `mac` | the code's HMAC (32 bytes) | | `<i>c` `<i>e` `<i>s` | send i: channel, escalation cause, state |
//! | `sc` | the sealed code | | `<i>q` `<i>a` `<i>r` | send i: queued, answered, reported at |
//! | `cr` / `ex` | created / expires at | | `<i>f` `<i>x` `<i>d` | send i: reference, error, routing (JSON) |
//! | `cg` | challenge (base64url; channel `app`) | | `ad` | thumbprint of the device key that answered |
//!
//! Times are Unix milliseconds in decimal (exact in Lua's doubles until the year
//! 287,000).

use std::collections::HashMap;

use otpd_adapters::ChannelKind;
use otpd_adapters::smpp::encoding::Alphabet;
use redis::Value;
use serde::{Deserialize, Serialize};

use crate::domain::clock::UnixMillis;
use crate::domain::locale::Locale;
use crate::domain::name::Name;
use crate::domain::thin_str::ThinStr;
use crate::domain::verification::{
    ApprovalState, Challenge, EscalationCause, Failover, MatchCode, RequestedChannel, SendAttempt,
    SendDetails, SendState, State, Verification,
};
use crate::numbers::e164::E164;
use crate::numbers::reader::{NumberKind, NumberLine, Region};
use crate::secrets::code::{CodeLength, CodeMac, SealedCode};
use crate::secrets::id::VerificationId;
use crate::store::StoreError;

const MAX_SENDS: usize = 32;

/// The hash fields of a new verification, as `HSET` arguments.
pub fn encode(v: &Verification) -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::with_capacity(32);
    let mut put = |k: &'static str, v: Vec<u8>| out.push((k, v));
    let num = |n: i64| n.to_string().into_bytes();
    put("to", num(v.to.digits() as i64));
    if let Some(c) = v.line.country {
        put("cc", c.as_str().into());
    }
    put("lk", v.line.kind.as_str().into());
    put("pu", v.purpose.as_bytes().to_vec());
    if let Some(s) = &v.subject {
        put("su", s.as_bytes().to_vec());
    }
    if let Some(c) = &v.client {
        put("cl", c.as_bytes().to_vec());
    }
    put("lo", v.locale.as_str().into());
    put("ch", v.channel.as_str().into());
    put("cn", num(v.code_length.get().into()));
    put("mac", v.code_mac.0.to_vec());
    put("sc", v.sealed_code.0.to_string().into_bytes());
    put("cr", num(v.created_at.0));
    put("ex", num(v.expires_at.0));
    put("st", state_str(v.state).into());
    put("sa", num(v.state_changed_at.0));
    put("at", num(v.attempts.into()));
    put("ma", num(v.max_attempts.into()));
    put("ms", num(v.max_sends.into()));
    put("cd", num(v.resend_cooldown_ms.into()));
    if let Some(m) = v.match_code {
        put("mc", num(m.value().into()));
    }
    if let Some(t) = v.escalate_at.get() {
        put("ea", num(t.0));
    }
    if let Some(t) = v.acknowledged_at.get() {
        put("ak", num(t.0));
    }
    if let Some(a) = &v.approval {
        put("cg", a.challenge.to_string().into_bytes());
        if let Some(d) = &a.answered_by {
            put("ad", d.as_bytes().to_vec());
        }
    }
    if v.to_override {
        put("ov", b"1".to_vec());
    }
    put("n", num(v.sends.len() as i64));
    for (i, s) in v.sends.iter().enumerate() {
        for (k, value) in encode_send(s) {
            out.push((send_field(i + 1, k), value));
        }
    }
    out
}

/// The fields of one send, by letter.
fn encode_send(s: &SendAttempt) -> Vec<(char, Vec<u8>)> {
    let mut out = vec![
        ('c', s.channel.as_str().as_bytes().to_vec()),
        ('s', s.state.as_str().as_bytes().to_vec()),
        ('q', s.queued_at.0.to_string().into_bytes()),
    ];
    if let Some(e) = s.escalated {
        out.push(('e', e.as_str().as_bytes().to_vec()));
    }
    if let Some(t) = s.answered_at.get() {
        out.push(('a', t.0.to_string().into_bytes()));
    }
    if let Some(t) = s.reported_at.get() {
        out.push(('r', t.0.to_string().into_bytes()));
    }
    if let Some(r) = &s.reference {
        out.push(('f', r.as_bytes().to_vec()));
    }
    if let Some(e) = &s.error {
        out.push(('x', e.as_bytes().to_vec()));
    }
    if let Some(d) = &s.details {
        out.push(('d', encode_details(d)));
    }
    out
}

/// Field names of sends 1 to [`MAX_SENDS`] are static strings; a verification has at
/// most `max_sends` (≤ 20, by config) plus one escalation.
fn send_field(send: usize, letter: char) -> &'static str {
    const LETTERS: &str = "csqeafrxd";
    static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (1..=MAX_SENDS)
            .flat_map(|i| LETTERS.chars().map(move |l| format!("{i}{l}")))
            .collect()
    });
    let l = LETTERS.find(letter).expect("a send field letter");
    let names: &'static Vec<String> = &NAMES;
    &names[(send - 1) * LETTERS.len() + l]
}

#[derive(Serialize, Deserialize)]
struct DetailsJson {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    carrier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    route: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    failovers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    encoding: Option<String>,
    #[serde(default)]
    segments: u8,
    /// Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    receipt_due: Option<i64>,
}

pub fn encode_details(d: &SendDetails) -> Vec<u8> {
    serde_json::to_vec(&DetailsJson {
        carrier: d.carrier.as_deref().map(str::to_owned),
        route: d.route.as_deref().map(str::to_owned),
        failovers: d
            .failovers
            .iter()
            .map(|f| (f.carrier.to_string(), f.error.to_string()))
            .collect(),
        encoding: d.encoding.map(|a| a.as_str().to_owned()),
        segments: d.segments,
        receipt_due: d.receipt_due.get().map(|t| t.0),
    })
    .expect("plain data serialises")
}

fn decode_details(bytes: &[u8]) -> Result<SendDetails, StoreError> {
    let d: DetailsJson = serde_json::from_slice(bytes).map_err(|e| corrupt("d", e))?;
    Ok(SendDetails {
        carrier: d.carrier.as_deref().map(Name::new),
        route: d.route.as_deref().map(Name::new),
        failovers: d
            .failovers
            .into_iter()
            .map(|(carrier, error)| Failover {
                carrier: Name::new(&carrier),
                error: error.into(),
            })
            .collect(),
        encoding: match d.encoding.as_deref() {
            None => None,
            Some("gsm7") => Some(Alphabet::Gsm7),
            Some("ucs2") => Some(Alphabet::Ucs2),
            Some(other) => return Err(corrupt("d", format!("encoding {other:?}"))),
        },
        segments: d.segments,
        receipt_due: d.receipt_due.map(UnixMillis).into(),
    })
}

pub fn state_str(s: State) -> &'static str {
    match s {
        State::Pending => "p",
        State::Approved => "a",
        State::Denied => "d",
        State::Canceled => "c",
        State::Locked => "l",
    }
}

fn corrupt(field: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("verification field {field}: {why}"))
}

/// A hash as `HGETALL` returns it.
pub type Fields = HashMap<Vec<u8>, Vec<u8>>;

/// The field/value pairs of an `HGETALL` reply (a flat array on RESP2, a map on RESP3).
pub fn fields(value: Value) -> Result<Fields, StoreError> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = match value {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(StoreError::Corrupt("an odd number of hash items".into()));
            }
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((bytes(k)?, bytes(v)?));
            }
            pairs
        }
        Value::Map(items) => items
            .into_iter()
            .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
            .collect::<Result<_, StoreError>>()?,
        Value::Nil => Vec::new(),
        other => return Err(StoreError::Corrupt(format!("a hash, got {other:?}"))),
    };
    Ok(pairs.into_iter().collect())
}

pub fn bytes(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(StoreError::Corrupt(format!("a string, got {other:?}"))),
    }
}

pub fn text(v: Value) -> Result<String, StoreError> {
    String::from_utf8(bytes(v)?).map_err(|e| StoreError::Corrupt(format!("not UTF-8: {e}")))
}

struct Reader<'a>(&'a Fields);

impl Reader<'_> {
    fn opt(&self, k: &str) -> Option<&[u8]> {
        self.0.get(k.as_bytes()).map(Vec::as_slice)
    }

    fn str(&self, k: &str) -> Result<&str, StoreError> {
        let b = self.opt(k).ok_or_else(|| corrupt(k, "missing"))?;
        std::str::from_utf8(b).map_err(|e| corrupt(k, e))
    }

    fn opt_str(&self, k: &str) -> Result<Option<&str>, StoreError> {
        self.opt(k)
            .map(|b| std::str::from_utf8(b).map_err(|e| corrupt(k, e)))
            .transpose()
    }

    fn int<T: std::str::FromStr>(&self, k: &str) -> Result<T, StoreError> {
        self.str(k)?
            .parse()
            .map_err(|_| corrupt(k, "not a number in range"))
    }

    fn opt_int<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, StoreError> {
        self.opt_str(k)?
            .map(|s| s.parse().map_err(|_| corrupt(k, "not a number in range")))
            .transpose()
    }

    fn time(&self, k: &str) -> Result<UnixMillis, StoreError> {
        self.int(k).map(UnixMillis)
    }

    fn opt_time(&self, k: &str) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self.opt_int(k)?.map(UnixMillis))
    }
}

fn parse_with<T: Copy>(
    field: &str,
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, StoreError> {
    all.iter()
        .copied()
        .find(|&x| name(x) == s)
        .ok_or_else(|| corrupt(field, format!("{s:?} is not a known value")))
}

pub fn channel_kind(field: &str, s: &str) -> Result<ChannelKind, StoreError> {
    parse_with(field, s, &[ChannelKind::Sms, ChannelKind::Push], |c| {
        c.as_str()
    })
}

/// The verification a hash holds.
pub fn decode(id: VerificationId, f: &Fields) -> Result<Verification, StoreError> {
    let r = Reader(f);
    let country = match r.opt_str("cc")? {
        None => None,
        Some(c) => Some(Region::parse(c).ok_or_else(|| corrupt("cc", c))?),
    };
    let mac: [u8; 32] = r
        .opt("mac")
        .ok_or_else(|| corrupt("mac", "missing"))?
        .try_into()
        .map_err(|_| corrupt("mac", "not 32 bytes"))?;
    let state = match r.str("st")? {
        "p" => State::Pending,
        "a" => State::Approved,
        "d" => State::Denied,
        "c" => State::Canceled,
        "l" => State::Locked,
        other => return Err(corrupt("st", other)),
    };
    let n: usize = r.int("n")?;
    if !(1..=MAX_SENDS).contains(&n) {
        return Err(corrupt("n", n));
    }
    let mut sends = smallvec::SmallVec::with_capacity(n);
    for i in 1..=n {
        let k = |l| send_field(i, l);
        sends.push(SendAttempt {
            channel: channel_kind(k('c'), r.str(k('c'))?)?,
            escalated: match r.opt_str(k('e'))? {
                None => None,
                Some(s) => Some(parse_with(
                    k('e'),
                    s,
                    &[EscalationCause::Timeout, EscalationCause::PushFailed],
                    EscalationCause::as_str,
                )?),
            },
            state: parse_with(k('s'), r.str(k('s'))?, &SendState::ALL, SendState::as_str)?,
            queued_at: r.time(k('q'))?,
            answered_at: r.opt_time(k('a'))?.into(),
            reported_at: r.opt_time(k('r'))?.into(),
            reference: r.opt_str(k('f'))?.map(compact_str::CompactString::new),
            error: r.opt_str(k('x'))?.map(ThinStr::new),
            details: r.opt(k('d')).map(decode_details).transpose()?,
        });
    }
    Ok(Verification {
        id,
        to: E164::from_digits_unchecked(r.int("to")?),
        line: NumberLine {
            country,
            kind: parse_with("lk", r.str("lk")?, &NumberKind::ALL, NumberKind::as_str)?,
        },
        purpose: Name::new(r.str("pu")?),
        subject: r.opt_str("su")?.map(ThinStr::new),
        client: r.opt_str("cl")?.map(Name::new),
        locale: parse_with("lo", r.str("lo")?, &Locale::ALL, Locale::as_str)?,
        channel: parse_with(
            "ch",
            r.str("ch")?,
            &RequestedChannel::ALL,
            RequestedChannel::as_str,
        )?,
        code_length: CodeLength::new(r.int("cn")?).ok_or_else(|| corrupt("cn", "out of range"))?,
        code_mac: CodeMac(mac),
        sealed_code: SealedCode(r.int("sc")?),
        created_at: r.time("cr")?,
        expires_at: r.time("ex")?,
        state,
        state_changed_at: r.time("sa")?,
        attempts: r.int("at")?,
        max_attempts: r.int("ma")?,
        max_sends: r.int("ms")?,
        resend_cooldown_ms: r.int("cd")?,
        sends,
        match_code: match r.opt_int::<u16>("mc")? {
            None => None,
            Some(m) => Some(MatchCode::new(m).ok_or_else(|| corrupt("mc", m))?),
        },
        escalate_at: r.opt_time("ea")?.into(),
        acknowledged_at: r.opt_time("ak")?.into(),
        approval: match r.opt_str("cg")? {
            None => None,
            Some(c) => Some(Box::new(ApprovalState {
                challenge: Challenge::parse(c).ok_or_else(|| corrupt("cg", c))?,
                answered_by: r.opt_str("ad")?.map(Box::from),
            })),
        },
        to_override: r.opt("ov").is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::verification::{NewVerification, Policy, SendResult};
    use crate::secrets::id::ShardTag;
    use std::time::Duration;

    pub(crate) fn sample() -> Verification {
        let to = E164::parse_international("+34600123456").unwrap();
        let mut v = Verification::new(
            NewVerification {
                id: VerificationId::new(ShardTag::of(to), [9; 14]),
                to,
                line: NumberLine {
                    country: Region::parse("ES"),
                    kind: NumberKind::Mobile,
                },
                purpose: "login".into(),
                subject: Some("12345678Z".into()),
                client: Some("bank".into()),
                locale: Locale::Va,
                channel: RequestedChannel::Auto,
                first_send: ChannelKind::Push,
                code_mac: CodeMac([0xA5; 32]),
                sealed_code: SealedCode(u64::MAX - 3),
                policy: Policy {
                    ttl: Duration::from_secs(600),
                    code_length: CodeLength::new(6).unwrap(),
                    max_attempts: 5,
                    max_sends: 3,
                    resend_cooldown: Duration::from_secs(30),
                    escalate_after: Duration::from_secs(60),
                },
                match_code: MatchCode::new(42),
                challenge: None,
            },
            UnixMillis(1_800_000_000_000),
        );
        let t = UnixMillis(1_800_000_001_000);
        v.check(false, t);
        v.escalate(EscalationCause::PushFailed, t);
        v.record_send_with(
            2,
            SendResult::Sent {
                reference: "msg-1".into(),
            },
            Some(SendDetails {
                carrier: Some("movistar".into()),
                route: Some("+34".into()),
                failovers: thin_vec::thin_vec![Failover {
                    carrier: "vodafone".into(),
                    error: "bind lost: \"x\"".into(),
                }],
                encoding: Some(Alphabet::Ucs2),
                segments: 2,
                receipt_due: t.plus(std::time::Duration::from_secs(1_500)).into(),
            }),
            t,
        );
        v.record_send(
            1,
            SendResult::Failed {
                error: "BadDeviceToken".into(),
            },
            t,
        );
        v
    }

    fn round_trip(v: &Verification) -> Verification {
        let fields: Fields = encode(v)
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        decode(v.id, &fields).unwrap()
    }

    #[test]
    fn a_verification_round_trips_through_its_fields() {
        let v = sample();
        assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn an_answered_approval_request_round_trips() {
        let mut v = sample();
        v.channel = RequestedChannel::App;
        v.approval = Some(Box::new(crate::domain::verification::ApprovalState {
            challenge: Challenge([7; 16]),
            answered_by: None,
        }));
        let t = UnixMillis(1_800_000_002_000);
        assert_eq!(
            v.answer(crate::secrets::device_key::Decision::Deny, "thumb-print", t),
            crate::domain::verification::AnswerOutcome::Answered(
                crate::domain::verification::Status::Denied
            )
        );
        let back = round_trip(&v);
        assert_eq!(back, v);
        assert_eq!(back.answered_by(), Some("thumb-print"));
    }

    #[test]
    fn a_broken_field_is_named() {
        let v = sample();
        let mut fields: Fields = encode(&v)
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        fields.insert(b"2s".to_vec(), b"teleported".to_vec());
        let err = decode(v.id, &fields).unwrap_err().to_string();
        assert!(err.contains("2s") && err.contains("teleported"), "{err}");
        fields.remove(b"mac".as_slice());
        assert!(
            decode(v.id, &fields)
                .unwrap_err()
                .to_string()
                .contains("mac")
        );
    }
}
