//! A thread of its own, at a lower CPU priority, for the work events cause after
//! the fact: writing clients' event logs and calling their webhooks.
//!
//! Why: a webhook is one HTTP request per event, several per verification, and at
//! the national peak on a busy machine that work competed with the requests and
//! the carriers for the same cores — the delivered rate fell by a third. Run at
//! `nice` 10 on a single-threaded runtime, it takes what the requests leave: at
//! saturation the backlog grows (`otpd_webhook_backlog`) and drains once there is
//! room, instead of slowing everyone. Nothing on the request path waits for it.

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::ServerError;

/// How much lower than the rest of otpd this thread runs (`nice`).
const NICENESS: i32 = 10;
/// What is still queued gets this long to be written when otpd stops.
const GRACE: Duration = Duration::from_millis(200);

pub(super) struct AfterTheFact {
    pub handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AfterTheFact {
    pub(super) fn start() -> Result<AfterTheFact, ServerError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otpd-events".into())
            .spawn(move || {
                lower_priority();
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

/// This thread at `NICENESS` (Linux gives each thread its own nice value).
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), NICENESS) {
        tracing::debug!(error = %e, "the events thread keeps otpd's priority");
    }
}
