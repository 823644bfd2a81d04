//! The in-memory subscriber registry. Writes are rare next to verifications, so one
//! read-write lock covers both maps — subjects and the phone index — and every
//! operation, the uniqueness check included, is atomic under it.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::PutSubscriber;
use crate::domain::subscriber::{Device, Platform, Subscriber};
use crate::numbers::e164::E164;

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Maps>,
}

#[derive(Default)]
struct Maps {
    subjects: HashMap<Box<str>, Subscriber>,
    phones: HashMap<E164, Box<str>>,
}

impl Registry {
    pub fn put(&self, subscriber: Subscriber) -> PutSubscriber {
        let mut maps = self.inner.write();
        if let Some(owner) = maps.phones.get(&subscriber.phone)
            && **owner != *subscriber.subject
        {
            return PutSubscriber::PhoneTaken {
                by: owner.to_string(),
            };
        }
        let previous = maps
            .subjects
            .insert(subscriber.subject.clone(), subscriber.clone());
        if let Some(old) = &previous
            && old.phone != subscriber.phone
        {
            maps.phones.remove(&old.phone);
        }
        maps.phones
            .insert(subscriber.phone, subscriber.subject.clone());
        if previous.is_some() {
            PutSubscriber::Replaced
        } else {
            PutSubscriber::Created
        }
    }

    pub fn get(&self, subject: &str) -> Option<Subscriber> {
        self.inner.read().subjects.get(subject).cloned()
    }

    pub fn delete(&self, subject: &str) -> bool {
        let mut maps = self.inner.write();
        match maps.subjects.remove(subject) {
            Some(old) => {
                maps.phones.remove(&old.phone);
                true
            }
            None => false,
        }
    }

    /// `None` if the subject is unknown; else whether the device fit.
    pub fn add_device(&self, subject: &str, device: Device) -> Option<(bool, Subscriber)> {
        let mut maps = self.inner.write();
        let s = maps.subjects.get_mut(subject)?;
        let added = s.add_device(device);
        Some((added, s.clone()))
    }

    /// `None` if the subject is unknown; else whether there was such a device.
    pub fn remove_device(&self, subject: &str, platform: Platform, token: &str) -> Option<bool> {
        let mut maps = self.inner.write();
        let s = maps.subjects.get_mut(subject)?;
        Some(s.remove_device(platform, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::UnixMillis;

    fn sub(subject: &str, phone: &str) -> Subscriber {
        Subscriber {
            subject: subject.into(),
            phone: E164::parse_international(phone).unwrap(),
            locale: None,
            devices: Vec::new(),
            updated_at: UnixMillis(0),
            contrast: None,
        }
    }

    #[test]
    fn one_number_belongs_to_one_subject() {
        let r = Registry::default();
        assert_eq!(r.put(sub("A", "+34600000001")), PutSubscriber::Created);
        assert_eq!(
            r.put(sub("B", "+34600000001")),
            PutSubscriber::PhoneTaken { by: "A".into() }
        );
        assert!(r.get("B").is_none(), "nothing half-written");
        // A changes number: the old one is free again.
        assert_eq!(r.put(sub("A", "+34600000002")), PutSubscriber::Replaced);
        assert_eq!(r.put(sub("B", "+34600000001")), PutSubscriber::Created);
        assert_eq!(
            r.put(sub("B", "+34600000002")),
            PutSubscriber::PhoneTaken { by: "A".into() }
        );
        assert!(r.delete("A"));
        assert!(!r.delete("A"));
        assert_eq!(r.put(sub("C", "+34600000002")), PutSubscriber::Created);
    }

    #[test]
    fn concurrent_claims_on_one_number_leave_one_owner() {
        let r = std::sync::Arc::new(Registry::default());
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let r = r.clone();
                std::thread::spawn(move || r.put(sub(&format!("S{i}"), "+34600000009")))
            })
            .collect();
        let created = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|o| *o == PutSubscriber::Created)
            .count();
        assert_eq!(created, 1);
    }
}
