//! The subscriber registry's model: who has which mobile number and which app
//! installations. One number belongs to at most one subject (Cl@ve's rule); a
//! subject has a few devices, each a push token on one platform for one app.

use std::fmt;

use crate::domain::clock::UnixMillis;
use crate::domain::locale::Locale;
use crate::numbers::e164::E164;
use crate::secrets::device_key::DeviceKey;

/// Devices one subject may register at most (phones and tablets of one person).
pub const MAX_DEVICES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Apns,
    Fcm,
    Hms,
}

impl Platform {
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "apns" => Some(Platform::Apns),
            "fcm" => Some(Platform::Fcm),
            "hms" => Some(Platform::Hms),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Hms => "hms",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One app installation that can receive pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub platform: Platform,
    pub token: Box<str>,
    /// Bundle id (APNs topic) or package name.
    pub app: Box<str>,
    pub added_at: UnixMillis,
    /// The public key the app made in the phone's keystore, to sign its answers to
    /// approval requests with. It lives and dies with the device: removing the
    /// device, or registering the same token again (with another key or none),
    /// revokes it.
    pub key: Option<DeviceKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub subject: Box<str>,
    pub phone: E164,
    pub locale: Option<Locale>,
    pub devices: Vec<Device>,
    pub updated_at: UnixMillis,
    /// The MAC of the subject's contrast value, when one is registered.
    pub contrast: Option<crate::secrets::contrast::ContrastMac>,
}

/// Why a push token or app id was refused. `Display` never echoes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("an APNs device token is 64 to 200 hexadecimal digits")]
    ApnsToken,
    #[error("a push token is 1 to 4096 visible ASCII characters")]
    Token,
    #[error("an app id is 1 to 255 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    App,
}

/// Check a token's shape for its platform: APNs tokens are hex; FCM and HMS tokens
/// are opaque printable strings.
pub fn validate_token(platform: Platform, token: &str) -> Result<(), DeviceError> {
    match platform {
        Platform::Apns => {
            if (64..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err(DeviceError::ApnsToken)
            }
        }
        Platform::Fcm | Platform::Hms => {
            if (1..=4096).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(())
            } else {
                Err(DeviceError::Token)
            }
        }
    }
}

pub fn validate_app(app: &str) -> Result<(), DeviceError> {
    if (1..=255).contains(&app.len())
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(())
    } else {
        Err(DeviceError::App)
    }
}

impl Subscriber {
    /// Add `device`, or refresh it if the same token is registered already. Returns
    /// false when the subject already has [`MAX_DEVICES`] others.
    pub fn add_device(&mut self, device: Device) -> bool {
        if let Some(existing) = self
            .devices
            .iter_mut()
            .find(|d| d.platform == device.platform && d.token == device.token)
        {
            *existing = device;
            return true;
        }
        if self.devices.len() >= MAX_DEVICES {
            return false;
        }
        self.devices.push(device);
        true
    }

    /// Remove the device with this token; returns whether there was one.
    pub fn remove_device(&mut self, platform: Platform, token: &str) -> bool {
        let before = self.devices.len();
        self.devices
            .retain(|d| !(d.platform == platform && &*d.token == token));
        self.devices.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(platform: Platform, token: &str) -> Device {
        Device {
            platform,
            token: token.into(),
            app: "es.gob.clave".into(),
            added_at: UnixMillis(0),
            key: None,
        }
    }

    fn subscriber() -> Subscriber {
        Subscriber {
            subject: "12345678Z".into(),
            phone: E164::parse_international("+34600123456").unwrap(),
            locale: None,
            devices: Vec::new(),
            updated_at: UnixMillis(0),
            contrast: None,
        }
    }

    #[test]
    fn tokens_are_checked_per_platform() {
        assert!(validate_token(Platform::Apns, &"a1".repeat(32)).is_ok());
        assert_eq!(
            validate_token(Platform::Apns, "abc"),
            Err(DeviceError::ApnsToken)
        );
        assert_eq!(
            validate_token(Platform::Apns, &"zz".repeat(32)),
            Err(DeviceError::ApnsToken)
        );
        assert!(validate_token(Platform::Fcm, "fcm:token_with-chars.1").is_ok());
        assert_eq!(validate_token(Platform::Fcm, ""), Err(DeviceError::Token));
        assert_eq!(
            validate_token(Platform::Hms, "with space"),
            Err(DeviceError::Token)
        );
        assert!(validate_app("es.gob.clave").is_ok());
        assert_eq!(validate_app("bad app"), Err(DeviceError::App));
        assert_eq!(validate_app(""), Err(DeviceError::App));
    }

    #[test]
    fn adding_the_same_token_refreshes_it_and_devices_are_capped() {
        let mut s = subscriber();
        assert!(s.add_device(device(Platform::Fcm, "t1")));
        assert!(s.add_device(device(Platform::Fcm, "t1")));
        assert_eq!(s.devices.len(), 1);
        assert!(
            s.add_device(device(Platform::Hms, "t1")),
            "another platform, another device"
        );
        for i in 2..MAX_DEVICES {
            assert!(s.add_device(device(Platform::Fcm, &format!("t{i}"))));
        }
        assert_eq!(s.devices.len(), MAX_DEVICES);
        assert!(!s.add_device(device(Platform::Fcm, "one-too-many")));
        assert!(s.remove_device(Platform::Fcm, "t1"));
        assert!(!s.remove_device(Platform::Fcm, "t1"));
    }

    #[test]
    fn platforms_parse_and_print() {
        for p in [Platform::Apns, Platform::Fcm, Platform::Hms] {
            assert_eq!(Platform::parse(p.as_str()), Some(p));
        }
        assert_eq!(Platform::parse("APNS"), None);
    }
}
