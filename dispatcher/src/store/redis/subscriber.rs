//! A subscriber as a Redis hash, and back: `ph` number's digits, `lo` locale, `up`
//! updated at, `ct` the contrast value's MAC (32 bytes), `dv` devices, one per line as `platform\ttoken\tapp\tadded_at`, and
//! `\talgorithm:spki_base64` after it when the device enrolled a key (tokens, app ids
//! and base64 are visible ASCII, so tabs and newlines cannot occur in them).

use crate::domain::clock::UnixMillis;
use crate::domain::locale::Locale;
use crate::domain::subscriber::{Device, Platform, Subscriber};
use crate::numbers::e164::E164;
use crate::secrets::device_key::DeviceKey;
use crate::store::StoreError;

use super::record::Fields;

pub fn encode(s: &Subscriber) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![
        ("ph", s.phone.digits().to_string().into_bytes()),
        ("up", s.updated_at.0.to_string().into_bytes()),
        (
            "dv",
            s.devices
                .iter()
                .map(device_line)
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
        ),
    ];
    if let Some(l) = s.locale {
        out.push(("lo", l.as_str().as_bytes().to_vec()));
    }
    if let Some(c) = s.contrast {
        out.push(("ct", c.0.to_vec()));
    }
    out
}

pub fn device_line(d: &Device) -> String {
    let mut line = format!(
        "{}\t{}\t{}\t{}",
        d.platform.as_str(),
        d.token,
        d.app,
        d.added_at.0
    );
    if let Some(key) = &d.key {
        line.push_str(&format!(
            "\t{}:{}",
            key.algorithm().as_str(),
            key.to_spki_base64()
        ));
    }
    line
}

fn corrupt(field: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("subscriber field {field}: {why}"))
}

/// `None` for an empty hash (no such subject).
pub fn decode(subject: &str, f: &Fields) -> Result<Option<Subscriber>, StoreError> {
    if f.is_empty() {
        return Ok(None);
    }
    let text = |k: &str| -> Result<&str, StoreError> {
        let b = f.get(k.as_bytes()).ok_or_else(|| corrupt(k, "missing"))?;
        std::str::from_utf8(b).map_err(|e| corrupt(k, e))
    };
    let phone: u64 = text("ph")?
        .parse()
        .map_err(|_| corrupt("ph", "not digits"))?;
    let updated: i64 = text("up")?
        .parse()
        .map_err(|_| corrupt("up", "not a time"))?;
    let locale = match f.get(b"lo".as_slice()) {
        None => None,
        Some(b) => {
            let s = std::str::from_utf8(b).map_err(|e| corrupt("lo", e))?;
            Some(
                Locale::ALL
                    .into_iter()
                    .find(|l| l.as_str() == s)
                    .ok_or_else(|| corrupt("lo", s))?,
            )
        }
    };
    let devices = text("dv")?
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split('\t');
            let mut next = || parts.next().ok_or_else(|| corrupt("dv", "short line"));
            let platform = next()?;
            let platform = Platform::parse(platform).ok_or_else(|| corrupt("dv", platform))?;
            let token = next()?.into();
            let app = next()?.into();
            let added: i64 = next()?.parse().map_err(|_| corrupt("dv", "not a time"))?;
            let key = parts
                .next()
                .map(|k| {
                    let (algorithm, spki) =
                        k.split_once(':').ok_or_else(|| corrupt("dv", "key"))?;
                    DeviceKey::parse(algorithm, spki).map_err(|e| corrupt("dv", e))
                })
                .transpose()?;
            Ok(Device {
                platform,
                token,
                app,
                added_at: UnixMillis(added),
                key,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(Subscriber {
        subject: subject.into(),
        phone: E164::from_digits_unchecked(phone),
        locale,
        devices,
        updated_at: UnixMillis(updated),
        contrast: match f.get(b"ct".as_slice()) {
            None => None,
            Some(b) => Some(crate::secrets::contrast::ContrastMac(
                b.as_slice()
                    .try_into()
                    .map_err(|_| corrupt("ct", "not 32 bytes"))?,
            )),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_round_trips() {
        let s = Subscriber {
            subject: "12345678Z".into(),
            phone: E164::from_digits_unchecked(34_600_123_456),
            locale: Some(Locale::Eu),
            devices: vec![
                Device {
                    platform: Platform::Apns,
                    token: "ab".repeat(32).into(),
                    app: "es.gob.clave".into(),
                    added_at: UnixMillis(5),
                    key: Some(
                        DeviceKey::from_spki(
                            crate::secrets::device_key::KeyAlgorithm::Ed25519,
                            &[
                                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21,
                                0x00, 0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b,
                                0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda,
                                0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
                            ],
                        )
                        .unwrap(),
                    ),
                },
                Device {
                    platform: Platform::Hms,
                    token: "x:y/z".into(),
                    app: "app".into(),
                    added_at: UnixMillis(6),
                    key: None,
                },
            ],
            updated_at: UnixMillis(7),
            contrast: Some(crate::secrets::contrast::ContrastMac([3; 32])),
        };
        let fields: Fields = encode(&s)
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        assert_eq!(decode("12345678Z", &fields).unwrap(), Some(s));
        assert_eq!(decode("x", &Fields::new()).unwrap(), None);
    }
}
