//! A scriptable in-memory channel for tests of the dispatcher: it records what it was
//! given, answers with scripted outcomes, can hold submits until released (to fill
//! queues on purpose), and can emit delivery reports.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc};

use crate::channel::{Channel, ChannelError, DeliveryReport, Message, SubmitReceipt};

/// A message as the fake saw it, with its text exposed for assertions.
#[derive(Debug, Clone)]
pub struct Sent {
    pub verification_id: String,
    pub send: u8,
    pub to: String,
    pub kind: crate::ChannelKind,
    pub locale: &'static str,
    pub text: String,
}

/// Scripted outcome for one submit.
pub enum Outcome {
    Accept,
    Fail(ChannelError),
}

pub struct FakeChannel {
    name: String,
    sent: Mutex<Vec<Sent>>,
    script: Mutex<VecDeque<Outcome>>,
    gate: Option<Semaphore>,
    next_ref: AtomicU64,
    reports_tx: mpsc::Sender<DeliveryReport>,
    reports_rx: Mutex<Option<mpsc::Receiver<DeliveryReport>>>,
}

impl FakeChannel {
    /// A channel that accepts everything immediately.
    pub fn new(name: &str) -> Self {
        Self::build(name, None)
    }

    /// A channel whose submits wait until [`FakeChannel::release`] lets them through.
    pub fn gated(name: &str) -> Self {
        Self::build(name, Some(Semaphore::new(0)))
    }

    fn build(name: &str, gate: Option<Semaphore>) -> Self {
        let (reports_tx, reports_rx) = mpsc::channel(1024);
        Self {
            name: name.to_string(),
            sent: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            gate,
            next_ref: AtomicU64::new(1),
            reports_tx,
            reports_rx: Mutex::new(Some(reports_rx)),
        }
    }

    /// Queue an outcome for a future submit (scripted outcomes are used in order; when
    /// none is left, submits are accepted).
    pub fn script(&self, outcome: Outcome) {
        self.script.lock().unwrap().push_back(outcome);
    }

    /// Let `n` held submits proceed (gated channels only).
    pub fn release(&self, n: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(n);
        }
    }

    /// Everything submitted so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// Emit a delivery report as the transport would.
    pub async fn report(&self, report: DeliveryReport) {
        let _ = self.reports_tx.send(report).await;
    }
}

#[async_trait]
impl Channel for FakeChannel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn submit(&self, message: &Message) -> Result<SubmitReceipt, ChannelError> {
        if let Some(gate) = &self.gate {
            gate.acquire()
                .await
                .map_err(|_| ChannelError::Closed)?
                .forget();
        }
        let outcome = self.script.lock().unwrap().pop_front();
        if let Some(Outcome::Fail(error)) = outcome {
            return Err(error);
        }
        self.sent.lock().unwrap().push(Sent {
            verification_id: message.verification_id.clone(),
            send: message.send,
            to: message.to.clone(),
            kind: message.kind,
            locale: message.locale,
            text: message.text.expose().to_string(),
        });
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        Ok(SubmitReceipt {
            reference: format!("{}-{n}", self.name),
        })
    }

    fn take_reports(&self) -> Option<mpsc::Receiver<DeliveryReport>> {
        self.reports_rx.lock().unwrap().take()
    }
}
