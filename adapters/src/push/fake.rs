//! A scriptable in-memory push provider for the dispatcher's tests: it records what it
//! was asked to push and answers with scripted outcomes (accepted when the script is
//! empty).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Notification, Outcome, Pusher};

/// A push as the fake saw it, its text exposed for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub token: String,
    pub app: String,
    pub body: String,
    pub verification_id: String,
    pub match_code: Option<String>,
}

pub struct FakePusher {
    name: String,
    pushed: Mutex<Vec<Pushed>>,
    script: Mutex<VecDeque<Outcome>>,
    next_id: AtomicU64,
}

impl FakePusher {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            pushed: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Answer the next pushes with these outcomes, in order.
    pub fn script(&self, outcomes: impl IntoIterator<Item = Outcome>) {
        self.script.lock().extend(outcomes);
    }

    pub fn pushed(&self) -> Vec<Pushed> {
        self.pushed.lock().clone()
    }
}

#[async_trait]
impl Pusher for FakePusher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn push(&self, push: &Notification<'_>, app: &str) -> Outcome {
        self.pushed.lock().push(Pushed {
            token: push.token.into(),
            app: app.into(),
            body: push.body.into(),
            verification_id: push.verification_id.into(),
            match_code: push.match_code.map(str::to_string),
        });
        self.script
            .lock()
            .pop_front()
            .unwrap_or_else(|| Outcome::Accepted {
                id: Some(format!(
                    "{}-{}",
                    self.name,
                    self.next_id.fetch_add(1, Ordering::Relaxed)
                )),
            })
    }
}
