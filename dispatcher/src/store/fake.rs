//! A store that cannot be reached: every call on every seam fails with
//! [`StoreError::Unavailable`], as a Redis that is down does. The fake beside the
//! seams, for what otpd must do then (answer 503 `store_unavailable`, say so in
//! `/healthz`, lose and invent nothing) without stopping a real server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    CheckedWithin, Fingerprint, Idempotency, IdempotencyBegin, IssueOutcome, JobLedger,
    PutSubscriber, Registry, StoreError, StoredResponse, TakeSend, Verifications,
};
use crate::domain::clock::UnixMillis;
use crate::domain::subscriber::{Device, Platform, Subscriber};
use crate::domain::verification::{
    AckOutcome, AnswerOutcome, CancelOutcome, Closing, EscalationCause, SendDetails, SendResult,
    SendState, Verification,
};
use crate::policy::limiter::{CheckLimits, IssueLimits, Limiter, MemoryLimiter};
use crate::secrets::code::CodeMac;
use crate::secrets::device_key::Decision;
use crate::secrets::id::VerificationId;

/// Every call fails: the store is down.
#[derive(Debug, Default)]
pub struct Unavailable;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable("the store is down (fake)".into()))
}

#[async_trait]
impl Verifications for Unavailable {
    async fn issue(
        &self,
        _: &Verification,
        _: UnixMillis,
        _: &IssueLimits<'_>,
    ) -> Result<IssueOutcome, StoreError> {
        down()
    }
    async fn check(
        &self,
        _: &VerificationId,
        _: &CodeMac,
        _: Option<&str>,
        _: UnixMillis,
        _: &CheckLimits<'_>,
    ) -> Result<CheckedWithin, StoreError> {
        down()
    }
    /// Limits decided on their own still work: they are not the store's.
    fn limiter(&self) -> Arc<dyn Limiter> {
        Arc::new(MemoryLimiter::new())
    }
    async fn get(&self, _: &VerificationId) -> Result<Option<Verification>, StoreError> {
        down()
    }
    async fn of_subject(&self, _: &str, _: usize) -> Result<Vec<Verification>, StoreError> {
        down()
    }
    async fn close(
        &self,
        _: &VerificationId,
        _: Option<&str>,
        _: Closing,
        _: UnixMillis,
    ) -> Result<Option<(CancelOutcome, Verification)>, StoreError> {
        down()
    }
    async fn acknowledge(
        &self,
        _: &VerificationId,
        _: UnixMillis,
    ) -> Result<Option<(AckOutcome, Verification)>, StoreError> {
        down()
    }
    async fn answer(
        &self,
        _: &VerificationId,
        _: Decision,
        _: &str,
        _: UnixMillis,
    ) -> Result<Option<(AnswerOutcome, Verification)>, StoreError> {
        down()
    }
    async fn escalate(
        &self,
        _: &VerificationId,
        _: EscalationCause,
        _: UnixMillis,
    ) -> Result<Option<Verification>, StoreError> {
        down()
    }
    async fn due_escalations(
        &self,
        _: UnixMillis,
        _: usize,
    ) -> Result<Vec<VerificationId>, StoreError> {
        down()
    }
    async fn sweep(&self, _: UnixMillis) -> Result<usize, StoreError> {
        down()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        down()
    }
}

#[async_trait]
impl JobLedger for Unavailable {
    async fn take_send(&self, _: &VerificationId, _: u8, _: &str) -> Result<TakeSend, StoreError> {
        down()
    }
    async fn record_send(
        &self,
        _: &VerificationId,
        _: u8,
        _: SendResult,
        _: Option<SendDetails>,
        _: UnixMillis,
    ) -> Result<bool, StoreError> {
        down()
    }
    async fn record_report(
        &self,
        _: &VerificationId,
        _: u8,
        _: SendState,
        _: Option<String>,
        _: UnixMillis,
    ) -> Result<Option<Verification>, StoreError> {
        down()
    }
}

#[async_trait]
impl Idempotency for Unavailable {
    async fn idempotency_begin(
        &self,
        _: &str,
        _: &Fingerprint,
        _: UnixMillis,
        _: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        down()
    }
    async fn idempotency_finish(
        &self,
        _: &str,
        _: &Fingerprint,
        _: StoredResponse,
        _: UnixMillis,
        _: Duration,
    ) -> Result<(), StoreError> {
        down()
    }
    async fn idempotency_abandon(&self, _: &str, _: &Fingerprint) -> Result<(), StoreError> {
        down()
    }
}

#[async_trait]
impl Registry for Unavailable {
    async fn put_subscriber(&self, _: Subscriber) -> Result<PutSubscriber, StoreError> {
        down()
    }
    async fn get_subscriber(&self, _: &str) -> Result<Option<Subscriber>, StoreError> {
        down()
    }
    async fn delete_subscriber(&self, _: &str) -> Result<bool, StoreError> {
        down()
    }
    async fn add_device(
        &self,
        _: &str,
        _: Device,
    ) -> Result<Option<(bool, Subscriber)>, StoreError> {
        down()
    }
    async fn remove_device(
        &self,
        _: &str,
        _: Platform,
        _: &str,
    ) -> Result<Option<bool>, StoreError> {
        down()
    }
}
