//! Background writes of usage counts and `last_used_at`, and the final
//! write at shutdown.
//!
//! Requests only count in memory; this task adds the counts to the store
//! every `--usage-flush-interval` and writes key uses every
//! `--key-use-flush-interval`. A failed write keeps its data in memory for
//! the next tick, so only a crash loses data: at most one interval of each.
//! The final write at shutdown retries a failing store for up to
//! [`FINAL_WRITE_RETRY_FOR`] and reports what it could not write.

use std::time::Duration;

use tenet_core::Tenet;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use crate::error::{Error, cause_chain};

/// How long the final write at shutdown retries a store that fails, such
/// as a Postgres primary that is failing over.
pub const FINAL_WRITE_RETRY_FOR: Duration = Duration::from_secs(10);

/// The pause before the second attempt of the final write; it doubles
/// after each further failure.
const FINAL_WRITE_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// The running flush task; [`Flusher::finish`] stops it and writes what is
/// left.
#[derive(Debug)]
pub struct Flusher {
    tenet: Tenet,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Flusher {
    /// Starts the periodic writes. Must run inside a tokio runtime.
    pub fn spawn(tenet: Tenet, usage_every: Duration, key_uses_every: Duration) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(tenet.clone(), usage_every, key_uses_every, stopped));
        tracing::debug!(
            usage_flush_interval_s = usage_every.as_secs(),
            key_use_flush_interval_s = key_uses_every.as_secs(),
            "started writing usage counts and key uses periodically"
        );
        Self { tenet, stop, task }
    }

    /// Stops the periodic writes and writes the counts and key uses that
    /// are still in memory. Call it after the last request has finished.
    ///
    /// A failing write is retried for up to [`FINAL_WRITE_RETRY_FOR`].
    /// Returns [`Error::FinalWrite`] when the usage counts or the key uses
    /// still could not be written, so that the process can report their
    /// loss.
    pub async fn finish(self) -> Result<(), Error> {
        let _ = self.stop.send(());
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "the flush task failed");
        }

        let deadline = Instant::now() + FINAL_WRITE_RETRY_FOR;
        let mut pause = FINAL_WRITE_FIRST_PAUSE;
        let mut usage_rows = None;
        let mut key_uses = None;
        loop {
            let mut failures = Vec::new();
            if usage_rows.is_none() {
                match self.tenet.flush_usage().await {
                    Ok(rows) => usage_rows = Some(rows),
                    Err(err) => failures.push(("usage counts", err)),
                }
            }
            if key_uses.is_none() {
                match self.tenet.flush_key_uses().await {
                    Ok(keys) => key_uses = Some(keys),
                    Err(err) => failures.push(("key uses", err)),
                }
            }

            if failures.is_empty() {
                tracing::info!(
                    usage_rows,
                    key_uses,
                    "wrote usage counts and key uses at shutdown"
                );
                return Ok(());
            }
            if Instant::now() + pause > deadline {
                // Both may have failed; the error reports the first and
                // the log line the other.
                let (data, source) = failures.remove(0);
                for (data, err) in failures {
                    tracing::error!(
                        error = %cause_chain(&err),
                        "failed to write the {data} at shutdown; those since the last write are lost"
                    );
                }
                return Err(Error::FinalWrite { data, source });
            }
            for (data, err) in &failures {
                tracing::warn!(
                    error = %cause_chain(err),
                    retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "failed to write the {data} at shutdown; retrying"
                );
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
}

async fn run(
    tenet: Tenet,
    usage_every: Duration,
    key_uses_every: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    // The first tick of each timer comes one period after start.
    let start = Instant::now();
    let mut usage_timer = interval_at(start + usage_every, usage_every);
    let mut key_use_timer = interval_at(start + key_uses_every, key_uses_every);
    usage_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    key_use_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = usage_timer.tick() => {
                flush_usage(&tenet).await;
            }
            _ = key_use_timer.tick() => {
                flush_key_uses(&tenet).await;
            }
        }
    }
}

/// Writes the usage counts and returns the number of rows written; a
/// failure is logged and the counts stay in memory for the next try.
async fn flush_usage(tenet: &Tenet) -> usize {
    match tenet.flush_usage().await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::error!(error = %cause_chain(&err), "failed to write usage counts; will retry");
            0
        }
    }
}

/// Writes the key uses and returns the number of keys written; a failure
/// is logged and the uses stay in memory for the next try.
async fn flush_key_uses(tenet: &Tenet) -> usize {
    match tenet.flush_key_uses().await {
        Ok(keys) => keys,
        Err(err) => {
            tracing::error!(error = %cause_chain(&err), "failed to write key uses; will retry");
            0
        }
    }
}
