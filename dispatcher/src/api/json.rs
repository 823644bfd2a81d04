//! Reading JSON bodies: size limit, media type, syntax, types and unknown fields, each
//! turned into an [`ApiError`] that names what is wrong — without echoing values.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body, with the raw bytes it came from (idempotency fingerprints them).
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if json_type != Some(true) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the server accepts (16 KiB by default)",
                )
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
        })?;
        let value = parse(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// Deserialize, naming the offending field by its path (`to`, `devices[0].token`).
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty; a JSON object is expected",
        ));
    }
    // serde would also fill a struct from an array, by position: refuse anything but
    // an object. (The first byte after whitespace tells.)
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        // The common case, in one pass.
        if let Ok(value) = serde_json::from_slice(raw) {
            return Ok(value);
        }
    }
    // Explain the failure in two steps, so that every error is classified right:
    // syntax first (serde_json calls a number where an enum belongs a syntax error),
    // then shape and types, with the path of the field at fault.
    let document: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| describe(e, String::new()))?;
    if !document.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the request body must be a JSON object",
        ));
    }
    match serde_path_to_error::deserialize(document) {
        Ok(value) => Ok(value),
        Err(e) => {
            let path = e.path().to_string();
            Err(describe(e.into_inner(), path))
        }
    }
}

fn describe(e: serde_json::Error, path: String) -> ApiError {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Syntax | Category::Eof => ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON (at {at})"),
        ),
        Category::Io => ApiError::bad_request("invalid_json", "the body could not be read"),
        Category::Data => describe_data_error(&e.to_string(), path),
    }
}

/// serde's data errors say "invalid type: string \"x\", expected u8": keep what was
/// expected (our schema), drop what was found (the caller's value).
fn describe_data_error(text: &str, path: String) -> ApiError {
    let text = text.split(" at line ").next().unwrap_or(text);
    let field_of = |path: &str| {
        if path == "." || path.is_empty() {
            None
        } else {
            Some(path.to_string())
        }
    };
    let name_in_backticks = || {
        let start = text.find('`')? + 1;
        let end = start + text[start..].find('`')?;
        Some(text[start..end].chars().take(64).collect::<String>())
    };
    let expected = text
        .split_once(", expected ")
        .map(|(_, e)| e.to_string())
        .unwrap_or_default();
    if text.starts_with("unknown field") {
        let name = name_in_backticks().unwrap_or_default();
        let field = match field_of(&path) {
            Some(parent) if !parent.ends_with(&name) => format!("{parent}.{name}"),
            Some(p) => p,
            None => name.clone(),
        };
        return ApiError::bad_request(
            "unknown_field",
            format!("unknown field `{name}`; expected {expected}"),
        )
        .field(field);
    }
    if text.starts_with("missing field") {
        let name = name_in_backticks().unwrap_or_default();
        let field = match field_of(&path) {
            Some(parent) => format!("{parent}.{name}"),
            None => name.clone(),
        };
        return ApiError::bad_request("missing_field", format!("the field `{field}` is required"))
            .field(field);
    }
    let field = field_of(&path);
    let subject = field
        .as_ref()
        .map(|f| format!("the field `{f}`"))
        .unwrap_or_else(|| "the body".to_string());
    let problem = if text.starts_with("invalid type") {
        format!("{subject} has the wrong type; expected {expected}")
    } else if text.starts_with("unknown variant") {
        format!("{subject} has an unsupported value; expected one of {expected}")
    } else {
        format!("{subject} has an invalid value; expected {expected}")
    };
    let error = ApiError::bad_request("invalid_field", problem);
    match field {
        Some(f) => error.field(f),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Check {
        code: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Kind {
        Sms,
        Push,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Create {
        to: String,
        kind: Option<Kind>,
    }

    #[test]
    fn wrong_type_names_the_field_and_hides_the_value() {
        let e = parse::<Check>(br#"{"code": 918273}"#).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert_eq!(e.field.as_deref(), Some("code"));
        assert!(!e.message.contains("918273"), "{}", e.message);
        assert!(e.message.contains("string"), "{}", e.message);
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = parse::<Check>(br#"{"code": "1234", "pin": "1"}"#).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("unknown_field", Some("pin")));
        let e = parse::<Check>(br#"{}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("missing_field", Some("code"))
        );
    }

    #[test]
    fn unsupported_variant_lists_the_choices_without_the_value() {
        let e =
            parse::<Create>(br#"{"to": "+34600123456", "kind": "carrier-pigeon"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_field", Some("kind"))
        );
        assert!(!e.message.contains("pigeon"), "{}", e.message);
        assert!(e.message.contains("sms"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_and_trailing_garbage() {
        for body in [
            &b"{"[..],
            b"{\"code\": }",
            b"not json",
            b"{\"code\": \"1234\"} x",
            b"   ",
        ] {
            let e = parse::<Check>(body).unwrap_err();
            assert_eq!(
                e.code,
                "invalid_json",
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_non_object_body_is_refused() {
        for body in [&b"[1,2]"[..], b"[\"123456\"]", b"42", b"\"code\"", b"null"] {
            let e = parse::<Check>(body).unwrap_err();
            assert_eq!(
                e.code,
                "invalid_body",
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
