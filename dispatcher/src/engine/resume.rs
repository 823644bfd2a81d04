//! After a restart on the embedded store: the sends that were accepted but that no
//! channel had answered go back in the delivery queue.
//!
//! The journal does not record the moment a worker hands a send to its channel, so
//! a send that reached a carrier in the instant before the process died is sent
//! again: at most the windows in flight at that instant, as when a carrier link is
//! cut. Nothing accepted is lost.

use super::Engine;
use crate::delivery::DeliveryJob;
use crate::domain::verification::{SendState, Status, Verification};

impl Engine {
    /// Queue every unanswered send of the pending verifications in `recovered`,
    /// waiting for room in the queue as the workers drain it. Returns how many were
    /// queued (fewer if the server stopped meanwhile).
    pub async fn resume(&self, recovered: Vec<Verification>) -> usize {
        let now = self.clock.now();
        let mut queued = 0;
        for v in recovered {
            if v.status(now) != Status::Pending {
                continue;
            }
            self.arm_expiry(&v.id, v.expires_at);
            for (i, s) in v.sends().iter().enumerate() {
                if s.state != SendState::Queued {
                    continue;
                }
                // An escalation's SMS carries the code alone, as when it was made.
                let escalated = s.escalated.is_some();
                let job = DeliveryJob {
                    id: v.id,
                    send: i as u8 + 1,
                    to: v.to,
                    kind: s.channel,
                    locale: v.locale,
                    purpose: v.purpose,
                    code: self.keys.unseal(&v.id, v.sealed_code, v.code_length),
                    expires_at: v.expires_at,
                    subject: v.subject.as_deref().map(Into::into).filter(|_| !escalated),
                    match_code: v.match_code.filter(|_| !escalated),
                    challenge: v.challenge().filter(|_| !escalated),
                    client: v.client,
                    provider_ack: !escalated
                        && self
                            .purposes
                            .get(&*v.purpose)
                            .is_some_and(|p| p.provider_ack),
                    receipt: None,
                    queued_at: now,
                };
                if self.queue.send(job).await.is_err() {
                    return queued;
                }
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::info!(queued, "sends accepted before the restart are queued again");
        }
        queued
    }
}
