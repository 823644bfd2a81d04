//! The `Channel` seam: one message in, a receipt or a classified error out.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// The kind of transport a message travels on. The dispatcher picks the kind; the
/// configuration maps each kind to a concrete channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Sms,
    Push,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Sms => "sms",
            ChannelKind::Push => "push",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rendered message text. It contains the one-time code, so it is wiped from memory
/// when dropped and never shows up in `Debug` output (and therefore in logs).
#[derive(Clone, PartialEq, Eq)]
pub struct MessageText(Zeroizing<String>);

impl MessageText {
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The plaintext, for the adapter that actually transmits it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MessageText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MessageText(<{} chars redacted>)",
            self.0.chars().count()
        )
    }
}

/// One message to deliver.
#[derive(Debug, Clone)]
pub struct Message {
    /// The verification this message belongs to (`vf_…`), for correlation only.
    pub verification_id: String,
    /// Which send of that verification this is (1 for the first, 2 for the first resend…).
    /// `(verification_id, send)` identifies a message, so channels can dedupe retries.
    pub send: u8,
    /// Destination in E.164, with the leading `+`.
    pub to: String,
    pub kind: ChannelKind,
    /// Language tag of the rendered text (`es`, `ca`, `gl`, `eu`, `va`, `en`).
    pub locale: &'static str,
    pub purpose: String,
    pub text: MessageText,
    /// When the code stops being valid (milliseconds since the Unix epoch): a channel
    /// can use it as the message's own validity (SMPP validity_period, APNs expiration).
    pub expires_at_ms: i64,
}

/// What a channel answers when it has taken a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitReceipt {
    /// The transport's own reference for the message (SMSC message id, push id, outbox
    /// line), used to match later delivery reports.
    pub reference: String,
}

/// A failure to submit, classified so the dispatcher can choose its policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The transport could not take the message now; the same message may succeed later
    /// (on this channel or another).
    #[error("temporary failure: {reason}")]
    Temporary {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The destination itself was refused (no such number, a number the network
    /// cannot reach): every carrier would give the same answer, so no failover.
    #[error("rejected: {reason}")]
    Rejected { reason: String },
    /// This carrier refused the message for a reason of its own (its rules, its
    /// limits, a fault it calls final): retrying here is pointless, another carrier
    /// may take it.
    #[error("refused: {reason}")]
    Refused { reason: String },
    /// The channel is shut down or was never started.
    #[error("channel closed")]
    Closed,
    /// The sender's [`SendGate`] withheld the message at the last moment; nothing
    /// left.
    #[error("withheld: {reason}")]
    Withheld { reason: String },
}

impl ChannelError {
    /// Whether the dispatcher may try the message again.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ChannelError::Temporary { .. })
    }
}

/// Final or intermediate state reported by the transport after submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportState {
    Delivered,
    Undeliverable,
    Expired,
    Rejected,
    /// No final report came within the channel's wait: the outcome is unknown, and
    /// the send is closed rather than left `sent` for ever.
    Unconfirmed,
}

/// A delivery report (SMPP receipt, push provider answer) about an earlier submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The [`SubmitReceipt::reference`] the report is about.
    pub reference: String,
    /// The [`Message::verification_id`] and [`Message::send`] of that submission, so
    /// that the dispatcher can record the report without a lookup of its own.
    pub verification_id: String,
    pub send: u8,
    pub state: ReportState,
    /// Transport error code or text, when the report carries one.
    pub error: Option<String>,
}

/// A transport that delivers messages.
/// The sender's last word before a message leaves; see [`Channel::submit_gated`].
#[async_trait]
pub trait SendGate: Send + Sync {
    /// `Ok` lets the message go; an error (normally [`ChannelError::Withheld`])
    /// keeps it back and is what the submit returns.
    async fn pass(&self) -> Result<(), ChannelError>;
}

/// A gate that always lets the message go.
pub struct Open;

#[async_trait]
impl SendGate for Open {
    async fn pass(&self) -> Result<(), ChannelError> {
        Ok(())
    }
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Short name for metrics and the delivery history (`file`, `smpp:movistar`, …).
    fn name(&self) -> &str;

    /// Hand one message to the transport. Returns once the transport has accepted or
    /// refused it; it never waits for the handset.
    async fn submit(&self, message: &Message) -> Result<SubmitReceipt, ChannelError>;

    /// [`Channel::submit`], passing `gate` at the last moment before the message
    /// leaves — after every wait for a bind, a window slot or a turn — so that
    /// what the gate records ("this node is sending it now") is as close as can be
    /// to the message leaving. A gate that refuses withholds the message
    /// ([`ChannelError::Withheld`]).
    async fn submit_gated(
        &self,
        message: &Message,
        gate: &dyn SendGate,
    ) -> Result<SubmitReceipt, ChannelError> {
        gate.pass().await?;
        self.submit(message).await
    }

    /// Whether the channel can take messages now (an SMPP carrier: at least one live
    /// bind). Shown by the health endpoint; routing will use it to fail over.
    fn healthy(&self) -> bool {
        true
    }

    /// How long past a message's validity its final delivery report may still come:
    /// after that the send is closed as unconfirmed, also where the node that sent it
    /// is gone. `None` for channels that report nothing.
    fn receipt_wait(&self) -> Option<std::time::Duration> {
        None
    }

    /// The stream of delivery reports, taken once by the dispatcher. Channels without
    /// reports return `None`.
    fn take_reports(&self) -> Option<mpsc::Receiver<DeliveryReport>> {
        None
    }

    /// Finish in-flight work and release the transport; called once at shutdown.
    async fn shutdown(&self) {}
}
