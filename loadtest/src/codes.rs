//! Reading a code the way a person does: from the text of an SMS as the SMSC received
//! it (GSM 7-bit one septet per octet, Latin-1 or UCS-2), or from a push as the
//! provider received it (the visible text, and the verification it belongs to).

/// The text of a short message of `data_coding`.
pub fn sms_text(data_coding: u8, body: &[u8]) -> String {
    match data_coding {
        // UCS-2, big-endian.
        0x08 => {
            let units: Vec<u16> = body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // GSM 7-bit unpacked and Latin-1 agree with ASCII on digits and letters, which
        // is all a code needs.
        _ => body.iter().map(|&b| b as char).collect(),
    }
}

/// The first run of exactly `len` ASCII digits in `text`.
pub fn find_code(text: &str, len: usize) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == len {
                return Some(text[start..i].to_string());
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The verification id and the visible text of a push body (APNs, FCM or HMS; HMS
/// carries its data as a JSON string, which is read too).
/// The approval request a push carries, if it is one (its data says
/// `"kind": "approval"`); cheap to refuse for a push that is not.
pub fn approval_request(body: &[u8]) -> Option<crate::app::Request> {
    const MARK: &[u8] = b"approval";
    if !body.windows(MARK.len()).any(|w| w == MARK) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    crate::app::Request::from_push(&value)
}

pub fn push_fields(body: &[u8]) -> Option<PushFields> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut found = Found::default();
    walk(&value, &mut found);
    Some(PushFields {
        id: found.id?,
        text: found.text?,
        ack_token: found.ack_token,
    })
}

/// What a person's app reads in a push: which verification, the text shown, and the
/// token it acknowledges the push with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFields {
    pub id: String,
    pub text: String,
    pub ack_token: Option<String>,
}

#[derive(Default)]
struct Found {
    id: Option<String>,
    text: Option<String>,
    ack_token: Option<String>,
}

fn walk(v: &serde_json::Value, found: &mut Found) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("verification_id", serde_json::Value::String(s)) => found.id = Some(s.clone()),
                    ("ack_token", serde_json::Value::String(s)) => {
                        found.ack_token = Some(s.clone())
                    }
                    ("body", serde_json::Value::String(s)) if found.text.is_none() => {
                        found.text = Some(s.clone())
                    }
                    (_, serde_json::Value::String(s)) if s.starts_with('{') => {
                        if let Ok(inner) = serde_json::from_str(s) {
                            walk(&inner, found);
                        }
                    }
                    _ => walk(v, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
        _ => {}
    }
}

/// A code of the same length that is not `code`.
pub fn wrong(code: &str) -> String {
    let mut b = code.as_bytes().to_vec();
    if let Some(last) = b.last_mut() {
        *last = b'0' + (*last - b'0' + 1) % 10;
    }
    String::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_in_either_encoding() {
        assert_eq!(
            find_code("Tu código Cl@ve es 042317. Caduca en 10 min.", 6).as_deref(),
            Some("042317")
        );
        let ucs2: Vec<u8> = "Codi 998877, 10 min"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(find_code(&sms_text(8, &ucs2), 6).as_deref(), Some("998877"));
        assert_eq!(find_code("1234567 and 12", 6), None);
        assert_eq!(find_code("no code", 6), None);
    }

    #[test]
    fn push_bodies_of_every_provider_give_their_verification() {
        let apns = br#"{"aps":{"alert":{"title":"Cl@ve 427","body":"123456 es tu codigo"}},"otpd":{"verification_id":"vf_a","ack_token":"tok-a"}}"#;
        let fcm = br#"{"message":{"token":"t","notification":{"title":"x","body":"Code 654321"},"data":{"verification_id":"vf_b"}}}"#;
        let hms = br#"{"message":{"token":["t"],"data":"{\"verification_id\":\"vf_c\",\"ack_token\":\"tok-c\"}","android":{"notification":{"title":"x","body":"111222"}}}}"#;
        let fields = |id: &str, text: &str, ack: Option<&str>| PushFields {
            id: id.into(),
            text: text.into(),
            ack_token: ack.map(str::to_string),
        };
        assert_eq!(
            push_fields(apns),
            Some(fields("vf_a", "123456 es tu codigo", Some("tok-a")))
        );
        assert_eq!(push_fields(fcm).unwrap().id, "vf_b");
        assert_eq!(
            push_fields(hms),
            Some(fields("vf_c", "111222", Some("tok-c")))
        );
        assert_eq!(push_fields(b"not json"), None);
    }

    #[test]
    fn a_wrong_code_differs() {
        assert_eq!(wrong("123459"), "123450");
        assert_ne!(wrong("000000"), "000000");
    }
}
