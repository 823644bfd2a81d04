//! `/v1/verifications`: create (or re-send), read, check, cancel.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::json::JsonBody;
use super::refusal::refused;
use super::{AppState, Caller};
use crate::domain::verification::{
    AckOutcome, CancelOutcome, CheckOutcome, MatchCode, RequestedChannel, Status, Verification,
};
use crate::engine::{Idempotency, Issue, IssueRequest, Issued};
use crate::numbers::e164::E164;
use crate::secrets::code::Code;
use crate::secrets::id::VerificationId;
use crate::store::StoredResponse;

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVerification {
    /// Optional when `subject` names a registered subscriber: their number is used.
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    channel: Option<ChannelField>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    /// The end user's IP address, as the backend saw it: keys the per-IP limits.
    #[serde(default)]
    ip: Option<String>,
    /// The subject's contrast value (identity document's validity date or support
    /// number), where the client or purpose requires it.
    #[serde(default)]
    contrast: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChannelField {
    Auto,
    Sms,
    Push,
    App,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckVerification {
    code: String,
    /// The end user's IP address: keys the per-IP check limit.
    #[serde(default)]
    ip: Option<String>,
}

/// Serializes anything `Display` straight into the output (serde_json's `collect_str`
/// writes without an intermediate `String`).
struct AsStr<T>(T);

impl<T: std::fmt::Display> Serialize for AsStr<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

type Time = AsStr<crate::domain::clock::Rfc3339>;

fn time(t: crate::domain::clock::UnixMillis) -> Time {
    AsStr(t.rfc3339())
}

/// A number as a view shows it: whole to the client that asked for the code,
/// masked (`+34*******22`) to an operator.
enum Shown {
    Whole(E164),
    Masked(String),
}

impl Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shown::Whole(n) => s.collect_str(n),
            Shown::Masked(m) => s.serialize_str(m),
        }
    }
}

/// A verification as the API shows it.
#[derive(Serialize)]
pub struct VerificationView<'a> {
    id: AsStr<VerificationId>,
    status: &'static str,
    to: Shown,
    /// The client that asked for it: shown to operators only (a client sees its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    /// The number's country (ISO 3166-1 alpha-2); absent for non-geographic numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<crate::numbers::reader::Region>,
    /// `mobile`, `fixed_line_or_mobile`, …
    number_type: &'static str,
    channel: &'static str,
    purpose: &'a str,
    locale: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    /// Sent to another number than the subject's registered one (`override_to`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    to_override: bool,
    /// Shown on the requesting screen; the push shows the same number.
    #[serde(skip_serializing_if = "Option::is_none")]
    match_code: Option<AsStr<MatchCode>>,
    /// Approval requests, while pending: the challenge URI for a QR code.
    #[serde(skip_serializing_if = "Option::is_none")]
    qr: Option<String>,
    /// Approval requests, once answered in the app: the thumbprint of the device key
    /// that signed the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    answered_by: Option<&'a str>,
    /// When the verification became final (approved, denied, canceled, locked).
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<Time>,
    /// When the push, unacknowledged, will be followed by an SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    escalates_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acknowledged_at: Option<Time>,
    created_at: Time,
    expires_at: Time,
    attempts_left: u8,
    sends_left: u8,
    delivery: DeliveryView<'a>,
}

#[derive(Serialize)]
struct DeliveryView<'a> {
    state: &'static str,
    channel: &'static str,
    attempts: Vec<SendView<'a>>,
}

#[derive(Serialize)]
struct SendView<'a> {
    send: u8,
    channel: &'static str,
    /// Why this send was made: `push_timeout` or `push_failed` for an SMS after push.
    #[serde(skip_serializing_if = "Option::is_none")]
    escalated: Option<&'static str>,
    state: &'static str,
    queued_at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    answered_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// SMS: the carrier that took it (or was tried last).
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<&'a str>,
    /// SMS: the route's prefix, or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    /// SMS: carriers passed over before, and why.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    failovers: Vec<FailoverView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<u8>,
}

#[derive(Serialize)]
struct FailoverView<'a> {
    carrier: &'a str,
    error: &'a str,
}

impl<'a> VerificationView<'a> {
    /// `qr_base`: the start of approval requests' challenge URIs (`app.qr_uri`).
    pub fn of(v: &'a Verification, status: Status, qr_base: &str) -> Self {
        let attempts = v
            .sends()
            .iter()
            .enumerate()
            .map(|(i, s)| SendView {
                send: (i + 1) as u8,
                channel: s.channel.as_str(),
                escalated: s.escalated.map(|c| c.as_str()),
                state: s.state.as_str(),
                queued_at: time(s.queued_at),
                answered_at: s.answered_at.get().map(time),
                reported_at: s.reported_at.get().map(time),
                reference: s.reference.as_deref(),
                error: s.error.as_deref(),
                carrier: s.details.as_ref().and_then(|d| d.carrier.as_deref()),
                route: s.details.as_ref().and_then(|d| d.route.as_deref()),
                failovers: s
                    .details
                    .iter()
                    .flat_map(|d| d.failovers.iter())
                    .map(|f| FailoverView {
                        carrier: &f.carrier,
                        error: &f.error,
                    })
                    .collect(),
                encoding: s
                    .details
                    .as_ref()
                    .and_then(|d| d.encoding)
                    .map(|a| a.as_str()),
                segments: s
                    .details
                    .as_ref()
                    .filter(|d| d.segments > 0)
                    .map(|d| d.segments),
            })
            .collect();
        let last_channel = v
            .sends()
            .last()
            .map(|s| s.channel.as_str())
            .unwrap_or("sms");
        Self {
            id: AsStr(v.id),
            status: status.as_str(),
            to: Shown::Whole(v.to),
            client: None,
            country: v.line.country,
            number_type: v.line.kind.as_str(),
            channel: v.channel.as_str(),
            purpose: &v.purpose,
            locale: v.locale.as_str(),
            subject: v.subject.as_deref(),
            to_override: v.to_override,
            match_code: v.match_code.map(AsStr),
            qr: (status == Status::Pending)
                .then(|| crate::domain::approval::qr_uri(qr_base, v))
                .flatten(),
            answered_by: v.answered_by(),
            finished_at: (!matches!(status, Status::Pending | Status::Expired))
                .then(|| time(v.state_changed_at())),
            escalates_at: v.escalate_at().map(time),
            acknowledged_at: v.acknowledged_at().map(time),
            created_at: time(v.created_at),
            expires_at: time(v.expires_at),
            attempts_left: v.attempts_left(),
            sends_left: v.sends_left(),
            delivery: DeliveryView {
                state: v.delivery_state().as_str(),
                channel: last_channel,
                attempts,
            },
        }
    }

    /// For an operator's lookup: the number masked, the client named, and nothing
    /// that would let its reader act for the person (no QR challenge, no match code).
    pub fn masked(v: &'a Verification, status: Status) -> Self {
        Self {
            to: Shown::Masked(crate::events::masked(v.to)),
            client: v.client.as_deref(),
            match_code: None,
            qr: None,
            ..Self::of(v, status, "")
        }
    }
}

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("views serialize")
}

/// The `{id}` path segment, parsed; a malformed id is a 400 naming the field.
pub struct IdPath(pub VerificationId);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::bad_request("invalid_id", crate::secrets::id::InvalidId.to_string())
                .field("id")
        };
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid())?;
        raw.parse().map(IdPath).map_err(|_| invalid())
    }
}

/// The subject of a request in its normal form ([`crate::domain::subject::normalize`]); a
/// refusal names the field and why, never the value.
pub(super) fn validate_subject(s: &str) -> Result<Box<str>, ApiError> {
    crate::domain::subject::normalize(s).map_err(|e| {
        ApiError::bad_request("invalid_subject", e.to_string())
            .field("subject")
            .reason(e.reason())
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ),
        )
        .field("Idempotency-Key")
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// Read a create request into what the engine takes: every field parsed and in its
/// normal form. What needs the registry or the limits is the engine's to decide.
fn read_create(state: &AppState, body: CreateVerification) -> Result<IssueRequest, ApiError> {
    let contrast = match (&body.subject, body.contrast.as_deref()) {
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_contrast",
                "`contrast` goes with `subject`: it is checked against the subject's registered value",
            )
            .field("contrast"));
        }
        (_, given) => given
            .map(|c| {
                crate::secrets::contrast::normalize(c).map_err(|e| {
                    ApiError::bad_request("invalid_contrast", e.to_string()).field("contrast")
                })
            })
            .transpose()?,
    };
    if body.subject.is_none() && body.to.is_none() {
        return Err(ApiError::bad_request(
            "missing_field",
            "the field `to` is required unless `subject` names a registered subscriber",
        )
        .field("to"));
    }
    let subject = body.subject.as_deref().map(validate_subject).transpose()?;
    let to = body
        .to
        .as_deref()
        .map(|to| super::read_number(state, to, "to"))
        .transpose()?;
    let locale = body.locale.as_deref().map(super::read_locale).transpose()?;
    let channel = match body.channel.unwrap_or(ChannelField::Auto) {
        ChannelField::Auto => RequestedChannel::Auto,
        ChannelField::Sms => RequestedChannel::Sms,
        ChannelField::Push => RequestedChannel::Push,
        ChannelField::App => RequestedChannel::App,
    };
    Ok(IssueRequest {
        to,
        channel,
        locale,
        purpose: body.purpose,
        subject,
        contrast,
        ip: super::read_ip(body.ip.as_deref())?,
    })
}

/// `POST /v1/verifications`: parse, issue, render.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    headers: HeaderMap,
    body: JsonBody<CreateVerification>,
) -> Result<Response, ApiError> {
    let idempotency = idempotency_key(&headers)?.map(|key| {
        let mut hasher = Sha256::new();
        hasher.update(b"POST /v1/verifications\n");
        hasher.update(&body.raw);
        Idempotency {
            key,
            fingerprint: hasher.finalize().into(),
        }
    });
    let request = read_create(&state, body.value)?;
    let render = |issued: &Issued| StoredResponse {
        status: created_status(issued).as_u16(),
        body: to_json(&VerificationView::of(
            issued.verification(),
            Status::Pending,
            &state.app.qr_uri,
        ))
        .into(),
    };
    match state
        .engine
        .issue(&client, request, idempotency, render)
        .await?
    {
        Issue::Done { issued, response } => Ok(created(&issued, response)),
        Issue::Replayed(stored) => {
            let mut response = json_response(
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                stored.body.to_vec(),
            );
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

/// `201 Created`, or `200` for the same request again (nothing sent).
fn created_status(issued: &Issued) -> StatusCode {
    match issued {
        Issued::Deduplicated(_) => StatusCode::OK,
        _ => StatusCode::CREATED,
    }
}

fn created(issued: &Issued, body: StoredResponse) -> Response {
    let mut response = json_response(created_status(issued), body.body.to_vec());
    let location = format!("/v1/verifications/{}", issued.verification().id);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    match issued {
        Issued::Resent(_) => {
            headers.insert("otpd-resent", HeaderValue::from_static("true"));
        }
        Issued::Deduplicated(_) => {
            headers.insert("otpd-deduplicated", HeaderValue::from_static("true"));
        }
        Issued::Created(_) => {}
    }
    response
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let (v, status) = state.engine.get(&client, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        to_json(&VerificationView::of(&v, status, &state.app.qr_uri)),
    ))
}

#[derive(Serialize)]
struct CheckView {
    id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_left: Option<u8>,
}

pub async fn check(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    IdPath(id): IdPath,
    body: JsonBody<CheckVerification>,
) -> Result<Response, ApiError> {
    let code = Code::parse(&body.value.code)
        .map_err(|e| ApiError::bad_request("invalid_code", e.to_string()).field("code"))?;
    let ip = super::read_ip(body.value.ip.as_deref())?;
    let checked = state
        .engine
        .check(&client, &id, &code, ip)
        .await
        .map_err(|r| refused(r, Some(&id)))?;
    let id_text = id.to_string();
    let ok = |status: &'static str, attempts_left: Option<u8>| {
        json_response(
            StatusCode::OK,
            to_json(&CheckView {
                id: id_text.clone(),
                status,
                attempts_left,
            }),
        )
    };
    match checked.outcome {
        CheckOutcome::Approved => Ok(ok("approved", None)),
        CheckOutcome::Wrong { attempts_left } => Ok(ok("pending", Some(attempts_left))),
        CheckOutcome::Locked => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "max_attempts_reached",
            "too many wrong codes: this verification is locked; request a new code",
        )
        .about(id_text, "locked")
        .attempts_left(0)),
        CheckOutcome::Expired => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this code has expired; request a new one",
        )
        .about(id_text, "expired")),
        CheckOutcome::Canceled => Err(ApiError::new(
            StatusCode::CONFLICT,
            "canceled",
            "this verification was canceled",
        )
        .about(id_text, "canceled")),
        CheckOutcome::AlreadyApproved => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_approved",
            "this verification was already approved; a code approves only once",
        )),
        CheckOutcome::Denied => Err(ApiError::new(
            StatusCode::CONFLICT,
            "denied",
            "this request was denied in the app",
        )
        .about(id_text, "denied")),
        CheckOutcome::NoCode => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_code_sent",
            "this approval request sent no code yet: it is answered in the app, and a code goes by SMS only if no answer comes in time",
        )
        .about(id_text, "pending")),
    }
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let (outcome, v) = state.engine.cancel(&client, &id).await?;
    let id_text = id.to_string();
    match outcome {
        CancelOutcome::Canceled | CancelOutcome::AlreadyCanceled => Ok(json_response(
            StatusCode::OK,
            to_json(&VerificationView::of(
                &v,
                Status::Canceled,
                &state.app.qr_uri,
            )),
        )),
        CancelOutcome::Final(Status::Expired) => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this verification has already expired",
        )
        .about(id_text, "expired")),
        CancelOutcome::Final(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_final",
            format!("this verification is already {}", status.as_str()),
        )
        .about(id_text, status.as_str())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The token the push carried (`ack_token` in its data).
    ack_token: String,
}

/// What an acknowledgement answers: nothing about the verification but its state.
#[derive(Serialize)]
struct AckView {
    id: String,
    status: &'static str,
}

/// `POST /v1/verifications/{id}/ack`: the app received the push. The push counts as
/// delivered and the SMS fallback is called off. Repeating it changes nothing.
///
/// Anyone may call it — the id is in the QR code — so the engine has it prove that
/// the push arrived (see [`crate::engine::Engine::acknowledge`]). The answer is the
/// id and status only: no number, no subject, no challenge.
pub async fn acknowledge(
    State(state): State<Arc<AppState>>,
    super::CallerAddr(caller): super::CallerAddr,
    IdPath(id): IdPath,
    body: JsonBody<AckBody>,
) -> Result<Response, ApiError> {
    let (outcome, answered) = state
        .engine
        .acknowledge(caller, &id, &body.value.ack_token)
        .await
        .map_err(|r| refused(r, Some(&id)))?;
    let id_text = id.to_string();
    match outcome {
        AckOutcome::Acknowledged | AckOutcome::AlreadyAcknowledged => Ok(json_response(
            StatusCode::OK,
            to_json(&AckView {
                id: id_text,
                status: answered.status.as_str(),
            }),
        )),
        AckOutcome::NotPush => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_push",
            "this verification was not sent by push; there is nothing to acknowledge",
        )
        .about(id_text, "pending")),
        AckOutcome::Final(Status::Expired) => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this verification has already expired",
        )
        .about(id_text, "expired")),
        AckOutcome::Final(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_final",
            format!("this verification is already {}", status.as_str()),
        )
        .about(id_text, status.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_subject_names_the_field_and_why_but_not_the_letter() {
        let e = validate_subject("12345678A").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_subject", Some("subject"))
        );
        assert_eq!(e.reason, Some("check_letter"));
        assert!(!e.message.contains('Z'), "{}", e.message);
    }
}
