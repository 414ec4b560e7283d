//! Coalescing of concurrent key lookups into one statement.
//!
//! Verifying a key without a cache reads the key and its tenant. Most of
//! what such a read costs Postgres is the statement around the index probe:
//! the protocol messages, the executor's start and the round trip. So the
//! lookups that arrive while a statement is in flight wait for it to end,
//! and then go together in the next one, which takes an array of digests.
//! An idle store adds no delay, because the first lookup starts a statement
//! at once.
//!
//! Each statement is sent by one of the callers in it, the leader, which
//! then replies to the others and passes the lead to the oldest waiting
//! caller. A leader that is dropped mid-statement (a client that closed its
//! connection, a timeout) puts the lookups it carried back in the queue and
//! passes the lead on, so no caller waits for a statement that nobody runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tokio_postgres::Row;

use super::errors::copy_error;
use super::pool::Connection;
use super::{
    KEY_COLUMNS, PostgresStore, SELECT_KEY_AND_TENANT_BY_DIGEST,
    SELECT_KEYS_AND_TENANTS_BY_DIGESTS, column, invalid_row, key_and_tenant_from_row,
};
use crate::error::{Error, Result};
use crate::key::KeyRecord;
use crate::secret::KeyDigest;
use crate::tenant::Tenant;

/// Maximum number of digests in one statement. It bounds the statement's
/// size and time when many lookups queue up at once.
const MAX_BATCH: usize = 64;

/// Maximum number of lookup statements in flight at once, each on its own
/// pooled connection. One keeps the batches large: on a 2-core machine
/// under `wrk -c8`, two in flight cost Postgres 1.5 to 1.6 times the CPU
/// per lookup of one (`docs/benchmarks.md`).
///
/// NOTE: one statement at a time caps a store at `MAX_BATCH` lookups per
/// statement time, by estimate 6,400 a second when a statement takes
/// 10 ms. That is still 4 times the cap of one lookup per statement on
/// each of the default pool's 16 connections.
const MAX_LEADERS: usize = 1;

/// The column of `SELECT_KEYS_AND_TENANTS_BY_DIGESTS` that contains the
/// 1-based position of the row's digest in the statement's array.
const SLOT_COLUMN: usize = KEY_COLUMNS + 5;

/// A key found by its digest, with its tenant when the tenant row exists.
pub(super) type KeyAndTenant = Option<(KeyRecord, Option<Tenant>)>;

/// A message to a waiting caller.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a reply lives only in its channel's slot, and boxing it would cost an allocation per reply"
)]
enum Reply {
    /// The result of its lookup, from another caller's statement.
    Found(Result<KeyAndTenant>),
    /// The lead: the caller must now run a statement itself.
    Lead,
}

/// One caller's lookup, waiting in the queue or carried by a leader.
#[derive(Debug)]
struct Lookup {
    digest: KeyDigest,
    reply: oneshot::Sender<Reply>,
}

/// Counts of the key lookups of [`PostgresStore::key_and_tenant_by_digest`]
/// and of the batches that carried them, over the life of a store and its
/// clones. `lookups / batches` is the mean batch size.
///
/// [`PostgresStore::key_and_tenant_by_digest`]: crate::Store::key_and_tenant_by_digest
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLookupStats {
    /// Lookups that a batch carried, whether it succeeded or failed.
    pub lookups: u64,
    /// Batches sent, each as one statement plus one retry when its
    /// connection was lost.
    pub batches: u64,
}

/// The lookups that wait for a statement, shared by a store's clones.
#[derive(Debug, Default)]
pub(super) struct LookupQueue {
    state: Mutex<QueueState>,
    lookups: AtomicU64,
    batches: AtomicU64,
}

#[derive(Debug, Default)]
struct QueueState {
    waiting: VecDeque<Lookup>,
    /// Callers that hold the lead, at most [`MAX_LEADERS`], counting a
    /// lead that is being passed on.
    leaders: usize,
}

impl LookupQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // No code that holds the lock can panic midway through an update,
        // so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the lead when fewer than [`MAX_LEADERS`] callers hold it, and
    /// otherwise queues a lookup of `digest` and returns its receiver.
    fn join(&self, digest: KeyDigest) -> Option<oneshot::Receiver<Reply>> {
        let mut state = self.lock();
        if state.leaders < MAX_LEADERS {
            state.leaders += 1;
            return None;
        }
        let (reply, answer) = oneshot::channel();
        state.waiting.push_back(Lookup { digest, reply });
        Some(answer)
    }

    /// Moves up to `MAX_BATCH - 1` waiting lookups, oldest first, into
    /// `batch`, leaving room for the leader's own.
    fn take_batch(&self, batch: &mut Vec<Lookup>) {
        let mut state = self.lock();
        let size = state.waiting.len().min(MAX_BATCH - 1);
        batch.extend(state.waiting.drain(..size));
    }

    /// Counts a batch of `lookups` lookups.
    fn count(&self, lookups: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let lookups = u64::try_from(lookups).unwrap_or(u64::MAX);
        self.lookups.fetch_add(lookups, Ordering::Relaxed);
    }

    /// Passes a lead on to the oldest waiting caller that is still there,
    /// or gives it up when none waits. Lookups in `unanswered`, carried by
    /// a leader that stopped before replying, go back to the queue's front
    /// first.
    fn pass_lead(&self, unanswered: Vec<Lookup>) {
        let mut state = self.lock();
        for lookup in unanswered.into_iter().rev() {
            state.waiting.push_front(lookup);
        }
        loop {
            let Some(next) = state.waiting.pop_front() else {
                state.leaders -= 1;
                return;
            };
            // A caller that left has closed its receiver, so the send fails
            // and the lead goes to the next one. A caller that leaves after
            // the send passes the lead on itself (see `Waiting`).
            drop(state);
            if next.reply.send(Reply::Lead).is_ok() {
                return;
            }
            state = self.lock();
        }
    }
}

/// A waiting caller's receiver. When the caller is dropped after the lead
/// reached it, it passes the lead on.
struct Waiting<'a> {
    queue: &'a LookupQueue,
    answer: oneshot::Receiver<Reply>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // After `close`, no reply can arrive, so `try_recv` returns a lead
        // that was sent before it or none at all.
        self.answer.close();
        if let Ok(Reply::Lead) = self.answer.try_recv() {
            self.queue.pass_lead(Vec::new());
        }
    }
}

/// A caller's hold on the lead, with the lookups its statement carries.
/// Dropping it passes the lead on, and puts back the lookups that got no
/// reply, which happens when the leader is dropped mid-statement.
struct Lead<'a> {
    queue: &'a LookupQueue,
    batch: Vec<Lookup>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.queue.pass_lead(std::mem::take(&mut self.batch));
    }
}

impl PostgresStore {
    /// Returns how many key lookups verification made, and in how many
    /// batches.
    pub fn key_lookup_stats(&self) -> KeyLookupStats {
        KeyLookupStats {
            lookups: self.lookups.lookups.load(Ordering::Relaxed),
            batches: self.lookups.batches.load(Ordering::Relaxed),
        }
    }

    /// Looks up a key and its tenant by digest, in one statement with the
    /// lookups of other callers that arrive while a statement is in flight.
    ///
    /// The result is the same as that of a statement for this digest alone.
    /// A failure of the statement reaches every lookup in it, after one
    /// retry on another connection when the connection was lost.
    pub(super) async fn batched_key_and_tenant(&self, digest: KeyDigest) -> Result<KeyAndTenant> {
        if let Some(answer) = self.lookups.join(digest) {
            let mut waiting = Waiting {
                queue: &self.lookups,
                answer,
            };
            match (&mut waiting.answer).await {
                Ok(Reply::Found(result)) => return result,
                Ok(Reply::Lead) => {}
                // Every lookup gets a reply or the lead before its sender is
                // dropped, unless the leader panics while it replies.
                Err(_) => {
                    return Err(Error::store(self.redactor.message(format!(
                        "looking up a key in Postgres at {} failed: the lookup got no \
                         reply, because the task that ran its statement panicked",
                        self.target
                    ))));
                }
            }
        }
        self.lead_lookup(digest).await
    }

    /// Runs one statement for `digest` and the lookups waiting now, replies
    /// to them, and passes the lead on.
    async fn lead_lookup(&self, digest: KeyDigest) -> Result<KeyAndTenant> {
        let mut lead = Lead {
            queue: &self.lookups,
            batch: Vec::new(),
        };
        self.lookups.take_batch(&mut lead.batch);
        // A caller that gave up (a timeout, a closed client connection)
        // needs no reply.
        lead.batch.retain(|lookup| !lookup.reply.is_closed());
        self.lookups.count(lead.batch.len() + 1);

        if lead.batch.is_empty() {
            return self.select_one_with_retry(digest).await;
        }
        let (digests, slots) = distinct_digests(digest, &lead.batch);
        let rows = self.select_many_with_retry(&digests).await;

        // From here on nothing awaits, so every lookup gets its reply.
        let batch = std::mem::take(&mut lead.batch);
        match rows {
            Ok(rows) => reply_found(batch, &slots, found_by_slot(&rows, digests.len())),
            Err(err) => Err(reply_failed(batch, err)),
        }
    }

    /// Looks up one digest, once more on another connection when the first
    /// was lost.
    async fn select_one_with_retry(&self, digest: KeyDigest) -> Result<KeyAndTenant> {
        let mut connection = self.connection().await?;
        let first = self.select_one(&mut connection, digest).await;
        match self.retry_connection(connection, &first).await? {
            Some(mut connection) => self.select_one(&mut connection, digest).await,
            None => first,
        }
    }

    /// Looks up several digests in one statement, once more on another
    /// connection when the first was lost.
    async fn select_many_with_retry(&self, digests: &[KeyDigest]) -> Result<Vec<Row>> {
        let digests: Vec<&[u8]> = digests
            .iter()
            .map(|digest| &digest.as_bytes()[..])
            .collect();
        let mut connection = self.connection().await?;
        let first = self.select_many(&mut connection, &digests).await;
        match self.retry_connection(connection, &first).await? {
            Some(mut connection) => self.select_many(&mut connection, &digests).await,
            None => first,
        }
    }

    async fn select_one(
        &self,
        connection: &mut Connection,
        digest: KeyDigest,
    ) -> Result<KeyAndTenant> {
        let digest = &digest.as_bytes()[..];
        let row = connection
            .query_opt(SELECT_KEY_AND_TENANT_BY_DIGEST, &[&digest])
            .await
            .map_err(|err| self.failed(&err, "looking up a key and its tenant by digest"))?;
        row.as_ref().map(key_and_tenant_from_row).transpose()
    }

    async fn select_many(
        &self,
        connection: &mut Connection,
        digests: &[&[u8]],
    ) -> Result<Vec<Row>> {
        connection
            .query(SELECT_KEYS_AND_TENANTS_BY_DIGESTS, &[&digests])
            .await
            .map_err(|err| {
                self.failed(
                    &err,
                    format_args!(
                        "looking up {} keys and their tenants by digest",
                        digests.len()
                    ),
                )
            })
    }
}

/// Returns the distinct digests of a leader's `own` lookup, which comes
/// first, and of `batch`, and for each lookup of `batch` the index of its
/// digest among them.
///
/// Concurrent requests often present the same key, which then costs one
/// index probe and one row. The digests are compared in constant time, like
/// every comparison of a presented key's digest.
fn distinct_digests(own: KeyDigest, batch: &[Lookup]) -> (Vec<KeyDigest>, Vec<usize>) {
    let mut digests = Vec::with_capacity(batch.len() + 1);
    digests.push(own);
    let mut slots = Vec::with_capacity(batch.len());
    for lookup in batch {
        let slot = match digests.iter().position(|seen| seen.ct_eq(&lookup.digest)) {
            Some(slot) => slot,
            None => {
                digests.push(lookup.digest);
                digests.len() - 1
            }
        };
        slots.push(slot);
    }
    (digests, slots)
}

/// Decodes the rows of one statement of `count` digests by the position of
/// their digest. A digest without a row is not stored. A row that fails to
/// decode fails only the lookups of its digest.
fn found_by_slot(rows: &[Row], count: usize) -> Vec<Result<KeyAndTenant>> {
    let mut found: Vec<Result<KeyAndTenant>> = (0..count).map(|_| Ok(None)).collect();
    for row in rows {
        let slot: i64 = match column(row, SLOT_COLUMN, "digest position") {
            Ok(slot) => slot,
            Err(err) => return fail_all(&err, count),
        };
        let index = usize::try_from(slot - 1)
            .ok()
            .filter(|&index| index < count);
        let Some(index) = index else {
            let err = invalid_row("digest position", format!("{slot} of {count}"));
            return fail_all(&err, count);
        };
        // The digest column is unique, so each position has one row at most.
        found[index] = key_and_tenant_from_row(row).map(Some);
    }
    found
}

/// Returns `count` copies of `err`, for a statement whose rows cannot be
/// matched to their digests.
fn fail_all(err: &Error, count: usize) -> Vec<Result<KeyAndTenant>> {
    (0..count).map(|_| Err(copy_error(err))).collect()
}

/// Replies to each lookup of `batch` with the result of its digest's slot
/// and returns the leader's, from slot 0. The last lookup of a slot takes
/// the decoded value, and the others get copies.
fn reply_found(
    batch: Vec<Lookup>,
    slots: &[usize],
    mut found: Vec<Result<KeyAndTenant>>,
) -> Result<KeyAndTenant> {
    let mut remaining = vec![0usize; found.len()];
    remaining[0] = 1;
    for &slot in slots {
        remaining[slot] += 1;
    }
    for (lookup, &slot) in batch.into_iter().zip(slots) {
        remaining[slot] -= 1;
        let result = if remaining[slot] == 0 {
            std::mem::replace(&mut found[slot], Ok(None))
        } else {
            copy_result(&found[slot])
        };
        // The caller may have gone since the statement started.
        let _ = lookup.reply.send(Reply::Found(result));
    }
    std::mem::replace(&mut found[0], Ok(None))
}

fn copy_result(result: &Result<KeyAndTenant>) -> Result<KeyAndTenant> {
    match result {
        Ok(found) => Ok(found.clone()),
        Err(err) => Err(copy_error(err)),
    }
}

/// Replies to every lookup of `batch` with a copy of `err`, the failure of
/// their statement, and returns `err` for the leader.
fn reply_failed(batch: Vec<Lookup>, err: Error) -> Error {
    for lookup in batch {
        let _ = lookup.reply.send(Reply::Found(Err(copy_error(&err))));
    }
    err
}
