//! The server's own background tasks: escalating unacknowledged pushes, reclaiming
//! idle limit keys, sweeping expired records. Each runs until the stop signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::clock::Clock;
use crate::engine::Engine;
use crate::policy::admission::Admission;
use crate::store::Verifications;

/// How often due escalations are looked for. Escalation happens within this much of
/// its time, which is small beside the tens of seconds it waits.
pub(super) const ESCALATION_TICK: Duration = Duration::from_millis(100);

/// Send by SMS the pushes left unacknowledged past their time, and tell the
/// verifications that expired, until stopped.
pub(super) async fn escalate(
    engine: Arc<Engine>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                // Drain what is due now, a batch at a time.
                loop {
                    match engine.escalate_due(256).await {
                        Ok(256) => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "escalation check failed");
                            break;
                        }
                    }
                }
                loop {
                    match engine.expire_due(256).await {
                        Ok(256) => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "expiry check failed");
                            break;
                        }
                    }
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Reclaim expired records on a timer, and keep the metrics exporter tidy.
/// Forget limit keys back to a full burst and idle pumping scopes, every
/// `limits.reclaim_interval` (read again after a reload), until stopped.
pub(super) async fn reclaim(
    admission: Arc<Admission>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let every = admission.rules().policy.reclaim_interval;
        tokio::select! {
            () = tokio::time::sleep(every) => {
                admission.reclaim(clock.now());
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

pub(super) async fn sweep(
    store: Arc<dyn Verifications>,
    clock: Arc<dyn Clock>,
    every: std::time::Duration,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(e) = store.sweep(clock.now()).await {
                    tracing::warn!(error = %e, "sweep failed");
                }
                prometheus.run_upkeep();
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// This process's name among the nodes sharing a Redis: host, process id and a
/// random part (a restarted process is another consumer; its old jobs are claimed).
pub(super) fn node_name() -> Arc<str> {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "otpd".into());
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    Arc::from(format!(
        "{host}-{}-{}",
        std::process::id(),
        hex::encode(random)
    ))
}
