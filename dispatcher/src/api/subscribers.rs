//! `/v1/subscribers`: the registry of who has which number and which devices.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::json::JsonBody;
use super::verifications::validate_subject;
use super::{AppState, Caller};
use crate::config::RegistryAccess;
use crate::domain::locale::Locale;
use crate::domain::subscriber::{self, Device, MAX_DEVICES, Platform, Subscriber};
use crate::events::{EventData, EventKind};
use crate::policy::clients::Client;
use crate::secrets::device_key::{DeviceKey, KeyError};
use crate::store::{PutSubscriber, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    phone: String,
    #[serde(default)]
    devices: Vec<DeviceBody>,
    #[serde(default)]
    locale: Option<String>,
    /// The contrast value (identity document's validity date or support number);
    /// only its MAC is kept, and it is never shown.
    #[serde(default)]
    contrast: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    platform: String,
    token: String,
    app: String,
    /// The app's public key for signing approvals, if it enrolls one.
    #[serde(default)]
    key: Option<KeyBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    algorithm: String,
    /// `SubjectPublicKeyInfo`, base64 (standard or URL-safe, padded or not).
    public_key: String,
}

#[derive(Serialize)]
struct SubscriberView<'a> {
    subject: &'a str,
    phone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'static str>,
    devices: Vec<DeviceView<'a>>,
    /// Whether a contrast value is registered (the value is never shown).
    contrast: bool,
    updated_at: String,
}

#[derive(Serialize)]
struct DeviceView<'a> {
    platform: &'static str,
    token: &'a str,
    app: &'a str,
    added_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<KeyView>,
}

#[derive(Serialize)]
struct KeyView {
    algorithm: &'static str,
    public_key: String,
    thumbprint: String,
}

fn view(s: &Subscriber) -> Vec<u8> {
    let v = SubscriberView {
        subject: &s.subject,
        phone: s.phone.to_string(),
        locale: s.locale.map(Locale::as_str),
        devices: s
            .devices
            .iter()
            .map(|d| DeviceView {
                platform: d.platform.as_str(),
                token: &d.token,
                app: &d.app,
                added_at: d.added_at.to_rfc3339(),
                key: d.key.as_ref().map(|k| KeyView {
                    algorithm: k.algorithm().as_str(),
                    public_key: k.to_spki_base64(),
                    thumbprint: k.thumbprint(),
                }),
            })
            .collect(),
        contrast: s.contrast.is_some(),
        updated_at: s.updated_at.to_rfc3339(),
    };
    serde_json::to_vec(&v).expect("views serialize")
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
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

/// Tell that `client` changed `subject`'s registration (the audit trail records
/// who changed what).
fn told(
    state: &AppState,
    client: &Client,
    kind: EventKind,
    subject: &str,
    platform: Option<crate::domain::subscriber::Platform>,
) {
    state.engine.emit(
        kind,
        client.id(),
        EventData {
            subject: Some(subject.into()),
            platform: platform.map(|p| p.as_str()),
            reason: (kind == EventKind::DeviceRemoved).then_some("client"),
            ..EventData::default()
        },
    );
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failure");
    ApiError::store_unavailable()
}

/// A client allowed to read the registry (`registry = "read"` or `"write"`), or
/// with `WRITE`, to change it (`"write"`).
pub struct Registry<const WRITE: bool>(pub Arc<Client>);

pub type RegistryReader = Registry<false>;
pub type RegistryWriter = Registry<true>;

impl<const WRITE: bool> FromRequestParts<Arc<AppState>> for Registry<WRITE> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Caller(client) = Caller::from_request_parts(parts, state).await?;
        let needed = if WRITE {
            RegistryAccess::Write
        } else {
            RegistryAccess::Read
        };
        allowed(&client, needed).map(|()| Registry(client))
    }
}

/// Refuse a client whose `registry` permission is below `needed`. The permission
/// extractors come before the path's and the body's, so a client without it learns
/// nothing, not even whether a subject is well-formed.
fn allowed(client: &Client, needed: RegistryAccess) -> Result<(), ApiError> {
    if client.registry >= needed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "registry_not_allowed",
        match needed {
            RegistryAccess::Write => {
                "this API key may not change the subscriber registry (`registry = \"write\"`)"
            }
            _ => "this API key may not read the subscriber registry (`registry = \"read\"`)",
        },
    ))
}

/// The path's `{subject}` in its normal form. A segment that is not even text is
/// refused like any bad subject: named, never repeated back.
pub struct SubjectPath(pub Box<str>);

fn subject_from_path(raw: &str) -> Result<Box<str>, ApiError> {
    validate_subject(raw).map_err(|mut e| {
        e.field_mut("subject (path)");
        e
    })
}

fn unreadable_path(field: &'static str) -> ApiError {
    ApiError::bad_request("invalid_path", "a path segment is not valid UTF-8 text").field(field)
}

impl<S: Send + Sync> FromRequestParts<S> for SubjectPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| unreadable_path("subject (path)"))?;
        subject_from_path(&raw).map(SubjectPath)
    }
}

/// `{subject}/devices/{platform}/{token}`.
pub struct DevicePath {
    subject: Box<str>,
    platform: Platform,
    token: String,
}

impl<S: Send + Sync> FromRequestParts<S> for DevicePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((subject, platform, token)) =
            Path::<(String, String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| unreadable_path("path"))?;
        let subject = subject_from_path(&subject)?;
        let platform = Platform::parse(&platform).ok_or_else(|| {
            ApiError::bad_request("invalid_device", "platform must be one of apns, fcm, hms")
                .field("platform (path)")
        })?;
        Ok(DevicePath {
            subject,
            platform,
            token,
        })
    }
}

fn unknown_subject() -> ApiError {
    ApiError::not_found("no subscriber with this subject")
}

fn device(
    index: Option<usize>,
    body: DeviceBody,
    now: crate::domain::clock::UnixMillis,
) -> Result<Device, ApiError> {
    let field = |name: &str| match index {
        Some(i) => format!("devices[{i}].{name}"),
        None => name.to_string(),
    };
    let platform = Platform::parse(&body.platform).ok_or_else(|| {
        ApiError::bad_request("invalid_device", "platform must be one of apns, fcm, hms")
            .field(field("platform"))
    })?;
    subscriber::validate_token(platform, &body.token).map_err(|e| {
        ApiError::bad_request("invalid_device", e.to_string()).field(field("token"))
    })?;
    subscriber::validate_app(&body.app)
        .map_err(|e| ApiError::bad_request("invalid_device", e.to_string()).field(field("app")))?;
    let key = body
        .key
        .map(|k| {
            DeviceKey::parse(&k.algorithm, &k.public_key).map_err(|e| {
                let at = match e {
                    KeyError::Algorithm => "key.algorithm",
                    _ => "key.public_key",
                };
                ApiError::bad_request("invalid_device_key", e.to_string()).field(field(at))
            })
        })
        .transpose()?;
    Ok(Device {
        platform,
        token: body.token.into(),
        app: body.app.into(),
        added_at: now,
        key,
    })
}

pub async fn put(
    State(state): State<Arc<AppState>>,
    Registry(client): RegistryWriter,
    SubjectPath(subject): SubjectPath,
    body: JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    let body = body.value;
    let now = state.engine.now();
    let phone = super::read_number(&state, &body.phone, "phone")?.e164;
    let locale = body.locale.as_deref().map(super::read_locale).transpose()?;
    if body.devices.len() > MAX_DEVICES {
        return Err(ApiError::bad_request(
            "too_many_devices",
            format!("a subscriber has at most {MAX_DEVICES} devices"),
        )
        .field("devices"));
    }
    let contrast = body
        .contrast
        .as_deref()
        .map(|c| {
            crate::secrets::contrast::normalize(c)
                .map(|normal| state.engine.contrast_mac(&subject, &normal))
                .map_err(|e| {
                    ApiError::bad_request("invalid_contrast", e.to_string()).field("contrast")
                })
        })
        .transpose()?;
    let mut subscriber = Subscriber {
        subject,
        phone,
        locale,
        devices: Vec::new(),
        updated_at: now,
        contrast,
    };
    for (i, d) in body.devices.into_iter().enumerate() {
        subscriber.add_device(device(Some(i), d, now)?);
    }
    let outcome = state
        .engine
        .stores()
        .registry
        .put_subscriber(subscriber.clone())
        .await
        .map_err(store_error)?;
    if !matches!(outcome, PutSubscriber::PhoneTaken { .. }) {
        told(
            &state,
            &client,
            EventKind::SubscriberUpdated,
            &subscriber.subject,
            None,
        );
    }
    match outcome {
        PutSubscriber::Created => Ok(json(StatusCode::CREATED, view(&subscriber))),
        PutSubscriber::Replaced => Ok(json(StatusCode::OK, view(&subscriber))),
        // Never who has it: that would look identity numbers up by phone.
        PutSubscriber::PhoneTaken { .. } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "phone_taken",
            "this number is registered to another subject; a number belongs to one subject",
        )
        .field("phone")),
    }
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    _: RegistryReader,
    SubjectPath(subject): SubjectPath,
) -> Result<Response, ApiError> {
    let s = state
        .engine
        .stores()
        .registry
        .get_subscriber(&subject)
        .await
        .map_err(store_error)?
        .ok_or_else(unknown_subject)?;
    Ok(json(StatusCode::OK, view(&s)))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Registry(client): RegistryWriter,
    SubjectPath(subject): SubjectPath,
) -> Result<Response, ApiError> {
    if state
        .engine
        .stores()
        .registry
        .delete_subscriber(&subject)
        .await
        .map_err(store_error)?
    {
        told(
            &state,
            &client,
            EventKind::SubscriberDeleted,
            &subject,
            None,
        );
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(unknown_subject())
    }
}

pub async fn add_device(
    State(state): State<Arc<AppState>>,
    Registry(client): RegistryWriter,
    SubjectPath(subject): SubjectPath,
    body: JsonBody<DeviceBody>,
) -> Result<Response, ApiError> {
    let device = device(None, body.value, state.engine.now())?;
    let platform = device.platform;
    match state
        .engine
        .stores()
        .registry
        .add_device(&subject, device)
        .await
        .map_err(store_error)?
    {
        None => Err(unknown_subject()),
        Some((false, _)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_devices",
            format!("a subscriber has at most {MAX_DEVICES} devices; remove one first"),
        )),
        Some((true, s)) => {
            told(
                &state,
                &client,
                EventKind::DeviceAdded,
                &subject,
                Some(platform),
            );
            Ok(json(StatusCode::CREATED, view(&s)))
        }
    }
}

pub async fn remove_device(
    State(state): State<Arc<AppState>>,
    Registry(client): RegistryWriter,
    DevicePath {
        subject,
        platform,
        token,
    }: DevicePath,
) -> Result<Response, ApiError> {
    match state
        .engine
        .stores()
        .registry
        .remove_device(&subject, platform, &token)
        .await
        .map_err(store_error)?
    {
        None => Err(unknown_subject()),
        Some(false) => Err(ApiError::not_found("the subscriber has no such device")),
        Some(true) => {
            told(
                &state,
                &client,
                EventKind::DeviceRemoved,
                &subject,
                Some(platform),
            );
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}
