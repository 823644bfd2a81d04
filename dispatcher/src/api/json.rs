//! Reading JSON bodies: size limit, media type, syntax, types and unknown fields, each
//! turned into an [`ApiError`] that names what is wrong — without echoing values.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A JSON body, with the raw bytes it came from (idempotency fingerprints them).
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

/// Bodies are read within `server.body_read_timeout` (a client that dribbles its body
/// holds a request open no longer), and not at all once the server is stopping: the
/// request is then refused (`503`) without having changed anything, rather than
/// holding the shutdown open while its body trickles in.
impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
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
        let read = Bytes::from_request(req, state);
        let mut read = std::pin::pin!(read);
        // Most bodies arrive with their head: taken at once, with no timer armed.
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
        let read = match first {
            std::task::Poll::Ready(read) => read,
            std::task::Poll::Pending => read_within(read, state).await?,
        };
        let raw = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                super::too_large()
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
        })?;
        let value = parse(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// The rest of a body still arriving: within `server.body_read_timeout`, and not past
/// the start of a shutdown.
async fn read_within<F: Future>(
    read: std::pin::Pin<&mut F>,
    state: &AppState,
) -> Result<F::Output, ApiError> {
    let mut stopping = state.stopping.clone();
    tokio::select! {
        read = read => Ok(read),
        () = tokio::time::sleep(state.body_read_timeout) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        )),
        _ = stopping.wait_for(|stop| *stop) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this server is stopping; the request was not taken, send it again",
        )
        .retry_after(std::time::Duration::from_secs(1))),
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
    // Explain the failure in steps, so that every error is classified right:
    // syntax first (serde_json calls a number where an enum belongs a syntax error),
    // then repeated keys, then shape and types, with the path of the field at fault.
    let document: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| describe(e, String::new()))?;
    // A key given twice is refused, wherever it is: a proxy that validated the first
    // and otpd that would read the last would not see the same request. Bodies are
    // structs, whose derived parsers refuse a repeated field, so the fast path above
    // never takes one; the document just parsed kept only the last, so the raw bytes
    // are walked again to name it.
    if let Some(path) = duplicates::find(raw) {
        let error = ApiError::bad_request(
            "duplicate_key",
            "a key appears twice in one object; each may be given once",
        );
        return Err(match path {
            Some(path) => error.field(path),
            None => error,
        });
    }
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
    // The only name taken from the request is an unknown key's, and only when it
    // is a plain short word: anything else is not repeated back.
    let name_in_backticks = || {
        let start = text.find('`')? + 1;
        let end = start + text[start..].find('`')?;
        safe_name(&text[start..end]).map(str::to_string)
    };
    let expected = text
        .split_once(", expected ")
        .map(|(_, e)| e.to_string())
        .unwrap_or_default();
    if text.starts_with("unknown field") {
        let parent = field_of(&path).filter(|p| safe_path(p));
        let Some(name) = name_in_backticks() else {
            let error = ApiError::bad_request(
                "unknown_field",
                format!("the body has an unknown field; expected {expected}"),
            );
            return match parent {
                Some(p) => error.field(p),
                None => error,
            };
        };
        let field = match parent {
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

/// A key name that may be repeated back: a plain word of at most 32 ASCII letters,
/// digits and underscores.
/// A field path (`devices[0].token`) whose every name is a [`safe_name`].
fn safe_path(path: &str) -> bool {
    path.split(['.', '[', ']'])
        .all(|s| s.is_empty() || safe_name(s).is_some())
}

pub(crate) fn safe_name(name: &str) -> Option<&str> {
    (!name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then_some(name)
}

/// Finding a key repeated within one object.
mod duplicates {
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    /// The path of the first repeated key (`code`, `devices[0].platform`), `Some(None)`
    /// when the key is not one to repeat back, `None` when every key is unique (or the
    /// bytes are not JSON: that is reported elsewhere).
    pub fn find(raw: &[u8]) -> Option<Option<String>> {
        let mut found = None;
        let mut de = serde_json::Deserializer::from_slice(raw);
        let _ = Node {
            path: String::new(),
            found: &mut found,
        }
        .deserialize(&mut de);
        found
    }

    /// One value of the document, at `path`.
    struct Node<'a> {
        path: String,
        found: &'a mut Option<Option<String>>,
    }

    #[derive(Debug)]
    struct Stop;

    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("duplicate key")
        }
    }

    impl<'de> DeserializeSeed<'de> for Node<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Node<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen: HashSet<String> = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if !seen.insert(key.clone()) {
                    let named = super::safe_path(&path);
                    *self.found = Some(named.then_some(path));
                    return Err(serde::de::Error::custom(Stop));
                }
                map.next_value_seed(Node {
                    path,
                    found: self.found,
                })?;
                if self.found.is_some() {
                    return Err(serde::de::Error::custom(Stop));
                }
            }
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Node {
                    path: format!("{}[{i}]", self.path),
                    found: self.found,
                })?
                .is_some()
            {
                if self.found.is_some() {
                    return Err(serde::de::Error::custom(Stop));
                }
                i += 1;
            }
            Ok(())
        }

        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
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
    fn a_repeated_key_is_refused_and_named() {
        let e = parse::<Check>(br#"{"code": "123456", "code": "000000"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("duplicate_key", Some("code"))
        );
        let e = parse::<Create>(br#"{"to": "+34600123456", "kind": "sms", "to": "+34600000000"}"#)
            .unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("duplicate_key", Some("to")));
        // Nested, in arrays.
        assert_eq!(
            duplicates::find(br#"{"a": [{"b": 1}, {"c": 1, "c": 2}]}"#),
            Some(Some("a[1].c".into()))
        );
        // A hostile key is refused without being named.
        let hostile = format!(r#"{{"{0}": 1, "{0}": 2}}"#, "<script>".repeat(100));
        assert_eq!(duplicates::find(hostile.as_bytes()), Some(None));
        assert_eq!(duplicates::find(br#"{"a": 1, "b": {"a": 2}}"#), None);
    }

    #[test]
    fn a_hostile_unknown_key_is_not_repeated_back() {
        let body = format!(
            r#"{{"code": "1234", "{}\u0001": 1}}"#,
            "<script>".repeat(2000)
        );
        let e = parse::<Check>(body.as_bytes()).unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert_eq!(e.field, None);
        assert!(!e.message.contains("script"), "{}", e.message);
        assert!(e.message.len() < 200, "{}", e.message);
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
