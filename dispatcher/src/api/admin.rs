//! Operator endpoints: why a number goes where it goes, and reloading the routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::{AdminCaller, AppState};
use crate::delivery::routes::Target;
use crate::engine::ExplainRequest;

/// `GET /v1/admin/routes?to=…[&purpose=…][&locale=…]`: the decision for a number —
/// its normalized form, country and type, the prefix that matched, the carriers in
/// order with their health, and the template with its encoding and SMS count.
pub async fn routes(
    State(state): State<Arc<AppState>>,
    _: AdminCaller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (query, to) = read_query(query, &["to", "purpose", "locale"])?;
    let number = super::read_number(&state, &to, "to")?;
    let locale = query
        .get("locale")
        .map(|t| super::read_locale(t))
        .transpose()?;
    let engine = &state.engine;
    let purpose = engine.find_purpose(query.get("purpose").map(String::as_str))?;
    let purpose_name: &str = &purpose.name;
    let router = engine.router();
    let plan = router.plan();
    let (locale, locale_from) = match locale {
        Some(locale) => (locale, "request"),
        None => match plan.country_locale(number.country) {
            Some(l) => (l, "country"),
            None => (engine.options().default_locale, "default"),
        },
    };
    let route = plan.route(number.e164);
    let now = state.engine.now();
    let carriers: Vec<serde_json::Value> = match route.target {
        Target::Blocked => Vec::new(),
        Target::Carriers(choices) => {
            let mut sorted: Vec<_> = choices.iter().collect();
            sorted.sort_by_key(|c| c.priority);
            sorted
                .iter()
                .map(|c| {
                    let group: u64 = sorted
                        .iter()
                        .filter(|o| o.priority == c.priority)
                        .map(|o| u64::from(o.weight))
                        .sum();
                    let share = if group == 0 {
                        0.0
                    } else {
                        f64::from(c.weight) / group as f64
                    };
                    json!({
                        "carrier": &*c.carrier,
                        "priority": c.priority,
                        "weight": c.weight,
                        "share": share,
                        "health": router.slot(&c.carrier).map(|s| s.health(now)),
                    })
                })
                .collect()
        }
    };
    let policy = purpose.policy;
    let minutes = policy.ttl.as_secs().div_ceil(60).max(1);
    let measure = plan.templates().preview(
        purpose_name,
        locale,
        usize::from(policy.code_length.get()),
        minutes,
    );
    Ok(Json(json!({
        "input": to,
        "number": number.e164.to_string(),
        "country": number.country,
        "number_type": number.kind.as_str(),
        "route": {
            "prefix": if route.prefix.is_empty() { "default" } else { route.prefix },
            "blocked": matches!(route.target, Target::Blocked),
        },
        "carriers": carriers,
        "min_validity_left_seconds": plan.min_validity_left().as_secs(),
        "template": {
            "purpose": purpose_name,
            "locale": locale.as_str(),
            "locale_from": locale_from,
            "source": plan.templates().source(purpose_name, locale),
            "encoding": measure.alphabet.as_str(),
            "units": measure.units,
            "segments": measure.segments,
            "max_segments": plan.templates().max_segments(),
        },
    }))
    .into_response())
}

/// The number of `to` and the purpose of the query (default: the server's).
fn read_query(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<(HashMap<String, String>, String), ApiError> {
    let query = known_params(query, allowed)?;
    let to = query.get("to").cloned().ok_or_else(|| {
        ApiError::bad_request("missing_field", "the query parameter `to` is required").field("to")
    })?;
    Ok((query, to))
}

/// The query's parameters, refused when one is not among `allowed`.
pub(super) fn known_params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request("invalid_query", "the query string could not be read")
    })?;
    if let Some(unknown) = query.keys().find(|k| !allowed.contains(&k.as_str())) {
        // Named only when a plain short word: the name is the caller's.
        let error = |named: &str| {
            ApiError::bad_request(
                "unknown_field",
                format!(
                    "unknown query parameter{named}; expected {}",
                    allowed.join(", ")
                ),
            )
        };
        return Err(match super::json::safe_name(unknown) {
            Some(name) => error(&format!(" `{name}`")).field(name),
            None => error(""),
        });
    }
    Ok(query)
}

/// The query's `limit`: `default` when absent, else a whole number from 1 to `max`.
pub(super) fn limit_param(
    query: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(t) = query.get("limit") else {
        return Ok(default);
    };
    t.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_limit",
                format!("`limit` is a whole number from 1 to {max}"),
            )
            .field("limit")
        })
}

/// `GET /v1/admin/limits?to=…[&subject][&ip][&purpose][&client]`: every limit a
/// request with these facts would meet now (quota, what is left, when it frees up),
/// the pumping defence's counts and judgement for the number's prefix and country,
/// and the decision — all without charging anything. `client` names a configured
/// client (default: the caller).
pub async fn limits(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (query, to) = read_query(query, &["to", "subject", "ip", "purpose", "client"])?;
    let request = ExplainRequest {
        to: super::read_number(&state, &to, "to")?,
        subject: query
            .get("subject")
            .map(|s| super::verifications::validate_subject(s))
            .transpose()?,
        ip: super::read_ip(query.get("ip").map(String::as_str))?,
        purpose: query.get("purpose").cloned(),
        client: query.get("client").cloned(),
    };
    let number = request.to;
    let explained = state.engine.explain(caller, request).await?;
    let explanation = explained.explanation;
    Ok(Json(json!({
        "number": number.e164.to_string(),
        "country": number.country,
        "client": &*explained.client.name,
        "purpose": &*explained.purpose.name,
        "purpose_capacity": explained.purpose_capacity,
        "decision": explanation.decision,
        "retry_after_ms": explanation.retry_after_ms,
        "limits": explanation.limits,
        "pumping": explanation.pumping,
    }))
    .into_response())
}

pub async fn reload(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
) -> Result<Response, ApiError> {
    let Some(reloader) = &state.reloader else {
        return Err(ApiError::not_found(
            "reloading is not offered by this server",
        ));
    };
    match reloader.reload().await {
        Ok(()) => {
            state.engine.emit(
                crate::events::EventKind::ConfigReloaded,
                caller.id(),
                crate::events::EventData::default(),
            );
            Ok(Json(json!({"status": "reloaded"})).into_response())
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            format!("the new configuration was refused, the one in force stays: {e}"),
        )),
    }
}

/// `GET /v1/admin/carriers`: every running carrier with its health — live binds,
/// suspended, breaker, error rate, cap and what waits under it.
pub async fn carriers(
    State(state): State<Arc<AppState>>,
    _: AdminCaller,
) -> Result<Response, ApiError> {
    Ok(Json(json!({"carriers": carriers_now(&state)})).into_response())
}

/// Every running carrier with its health now.
fn carriers_now(state: &AppState) -> Vec<serde_json::Value> {
    let now = state.engine.now();
    state
        .engine
        .router()
        .slots()
        .map(|slot| json!({"carrier": &*slot.name, "health": slot.health(now)}))
        .collect()
}

/// `POST /v1/admin/carriers/{name}/suspend`: routing passes the carrier over, and
/// the messages waiting in its line move on to their route's next carrier. On this
/// node, until resumed or restarted (a route change in the configuration is the
/// lasting way). Recorded as `admin.carrier_suspended`.
pub async fn suspend(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    set_suspended(&state, &caller, &name, true)
}

/// `POST /v1/admin/carriers/{name}/resume`: the carrier is routed to again.
/// Recorded as `admin.carrier_resumed`.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    set_suspended(&state, &caller, &name, false)
}

fn set_suspended(
    state: &AppState,
    caller: &crate::policy::clients::Client,
    name: &str,
    suspended: bool,
) -> Result<Response, ApiError> {
    let router = state.engine.router();
    let Some(slot) = router.slot(name) else {
        // Named only when a plain short word: the name is the caller's.
        let named = super::json::safe_name(name)
            .map(|n| format!(" `{n}`"))
            .unwrap_or_default();
        return Err(ApiError::not_found(format!(
            "no carrier{named}; GET /v1/admin/carriers lists them"
        )));
    };
    let changed = slot.suspend(suspended);
    if changed {
        let kind = if suspended {
            crate::events::EventKind::CarrierSuspended
        } else {
            crate::events::EventKind::CarrierResumed
        };
        record(
            state,
            caller,
            kind,
            crate::events::EventData {
                carrier: Some(slot.name.as_ref().into()),
                ..Default::default()
            },
        );
    }
    Ok(Json(json!({
        "carrier": &*slot.name,
        "changed": changed,
        "health": slot.health(state.engine.now()),
    }))
    .into_response())
}

/// `POST /v1/admin/subjects/{subject}/unlock`: give the subject its wrong-code
/// budget back (`limits.check_subject`), after a helpdesk has made sure the person
/// is who they say. Its verifications already locked stay locked; a new one may be
/// asked for at once. Recorded as `admin.subject_unlocked`.
pub async fn unlock(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    axum::extract::Path(subject): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let subject = super::verifications::validate_subject(&subject)?;
    let admission = state.engine.admission();
    let reset = admission
        .unlock(&admission.rules(), &subject)
        .await
        .map_err(limits_unavailable)?;
    record(
        &state,
        &caller,
        crate::events::EventKind::SubjectUnlocked,
        crate::events::EventData {
            subject: Some(subject.as_ref().into()),
            ..Default::default()
        },
    );
    Ok(Json(json!({"subject": &*subject, "unlocked": reset})).into_response())
}

/// Verifications shown by a subject lookup when the query does not say.
const SUBJECT_SHOWN: usize = 20;

/// `GET /v1/admin/subjects/{subject}/verifications[?limit=n]`: the subject's
/// verifications still held (every client's), newest first, for a helpdesk
/// answering "did my code go out?": status, channel, carrier, receipts, times —
/// the number masked, no code (never stored), no challenge. Recorded as
/// `admin.subject_looked_up`: reading a person's history is on the record too.
pub async fn subject_verifications(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    axum::extract::Path(subject): axum::extract::Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let subject = super::verifications::validate_subject(&subject)?;
    let query = known_params(query, &["limit"])?;
    let limit = limit_param(&query, SUBJECT_SHOWN, crate::store::MAX_OF_SUBJECT)?;
    let found = state.engine.of_subject(&subject, limit).await?;
    record(
        &state,
        &caller,
        crate::events::EventKind::SubjectLookedUp,
        crate::events::EventData {
            subject: Some(subject.as_ref().into()),
            ..Default::default()
        },
    );
    let views: Vec<_> = found
        .iter()
        .map(|(v, status)| super::verifications::VerificationView::masked(v, *status))
        .collect();
    Ok(Json(json!({"subject": &*subject, "verifications": views})).into_response())
}

/// `POST /v1/admin/pumping/unblock?to=…`: lift the SMS-pumping defence's judgement
/// on the number's prefix and country, once the traffic is known to be real (a
/// campaign, a new operator): their counts start again. On this node (the counts
/// are each node's). Recorded as `admin.pumping_unblocked`.
pub async fn unblock(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (_, to) = read_query(query, &["to"])?;
    let number = super::read_number(&state, &to, "to")?;
    let admission = state.engine.admission();
    let scopes = admission
        .unblock(&admission.rules(), number.e164, number.country)
        .await
        .map_err(limits_unavailable)?;
    record(
        &state,
        &caller,
        crate::events::EventKind::PumpingUnblocked,
        crate::events::EventData {
            to: Some(crate::events::masked(number.e164)),
            ..Default::default()
        },
    );
    Ok(Json(json!({"number": number.e164.to_string(), "cleared": scopes})).into_response())
}

/// Scopes listed in the overview, at most.
const SUSPECTS_SHOWN: usize = 50;

/// `GET /v1/admin/overview`: what the operator console shows beside the counters
/// of `/metrics` — every carrier's health, the routes, the delivery queue, the
/// push providers and the pumping scopes judged suspect now. This node's view.
pub async fn overview(
    State(state): State<Arc<AppState>>,
    _: AdminCaller,
) -> Result<Response, ApiError> {
    let engine = &state.engine;
    let now = engine.now();
    let router = engine.router();
    let plan = router.plan();
    let carriers = carriers_now(&state);
    let routes: Vec<serde_json::Value> = plan
        .routes()
        .map(|(prefix, target)| match target {
            Target::Blocked => json!({"prefix": prefix, "blocked": true, "carriers": []}),
            Target::Carriers(choices) => json!({
                "prefix": prefix,
                "blocked": false,
                "carriers": choices.iter().map(|c| json!({
                    "carrier": &*c.carrier,
                    "priority": c.priority,
                    "weight": c.weight,
                })).collect::<Vec<_>>(),
            }),
        })
        .collect();
    let queue = engine.queue();
    let admission = engine.admission();
    Ok(Json(json!({
        "at": now.0,
        "carriers": carriers,
        "routes": routes,
        "delivery_queue": {
            "depth": queue.depth(),
            "capacity": queue.capacity(),
            "standing_delay_ms": queue.standing_delay(now).map(|d| d.as_millis() as u64),
        },
        "push": state
            .push_providers
            .iter()
            .map(|(platform, provider)| json!({"platform": platform, "provider": provider}))
            .collect::<Vec<_>>(),
        "pumping_suspects": admission.pumping_suspects(&admission.rules(), now, SUSPECTS_SHOWN),
    }))
    .into_response())
}

/// An admin action, as an event of the admin client: the audit trail records it
/// with the client's name.
fn record(
    state: &AppState,
    caller: &crate::policy::clients::Client,
    kind: crate::events::EventKind,
    data: crate::events::EventData,
) {
    state.engine.emit(kind, caller.id(), data);
}

fn limits_unavailable(e: crate::policy::limiter::Unavailable) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "limits_unavailable",
        format!("the limits cannot be reached: {e}"),
    )
}
