//! Threads of their own, at a lower CPU priority, for the work events cause after
//! the fact: writing clients' event logs (`otpd-events`, [`KEEPING`]) and calling
//! their webhooks (`otpd-webhooks`, [`CALLING`]).
//!
//! Why: a webhook is one HTTP request per event, several per verification, and at
//! the national peak on a busy machine that work competed with the requests and
//! the carriers for the same cores — the delivered rate fell by a third. Each on a
//! single-threaded runtime at a lower priority, they take what the requests leave.
//! Keeping the events must keep up (its queue is bounded, and what overflows it is
//! lost), so it runs at `nice` 10: a share of the cores even when they are busy.
//! Calling the webhooks may fall behind: the events wait in the log, so it runs at
//! `nice` 19, the lowest priority an ordinary thread has — at saturation the
//! backlog grows (`otpd_webhook_backlog`) and drains once there is room, instead of
//! slowing everyone. Nothing on the request path waits for either.

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::ServerError;

/// The priority (`nice`) of the thread that keeps clients' events.
pub(super) const KEEPING: i32 = 10;
/// The priority (`nice`) of the thread that calls their webhooks.
pub(super) const CALLING: i32 = 19;
/// What is still queued gets this long to be written when otpd stops.
const GRACE: Duration = Duration::from_millis(200);

pub(super) struct AfterTheFact {
    pub handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AfterTheFact {
    /// A thread named `name` at `niceness`, with its runtime.
    pub(super) fn start(name: &str, niceness: i32) -> Result<AfterTheFact, ServerError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                lower_priority(niceness);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                    tokio::time::sleep(GRACE).await;
                });
                rt.shutdown_timeout(GRACE);
            })
            .map_err(ServerError::Serve)?;
        let handle = ready_rx
            .recv()
            .map_err(|_| ServerError::Serve(std::io::Error::other("the events thread ended")))?
            .map_err(|e| ServerError::Serve(std::io::Error::other(e)))?;
        Ok(AfterTheFact {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Let what is queued be written, then stop the thread.
    pub(super) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// This thread at `niceness` (Linux gives each thread its own nice value).
fn lower_priority(niceness: i32) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), niceness) {
        tracing::debug!(error = %e, "an events thread keeps otpd's priority");
    }
}
