//! Background tasks that keep the caches in step with other replicas:
//! the key event poller, the Redis invalidation subscriber and the Redis
//! breaker probe.
//!
//! Each task holds only a weak reference to the cache layer and ends once
//! the last `Tenet` handle sharing it is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use time::OffsetDateTime;
use tokio::time::{MissedTickBehavior, interval, sleep, timeout};

use super::{CacheLayer, Verdict, valid_verdict};
use crate::id::TenantId;
use crate::secret::KeyDigest;
use crate::store::{KeyEvent, KeyEventKind, Store};

/// How far back each poll reads, to catch events whose transactions
/// committed after a later event's. Must exceed the longest write
/// transaction, which the stores' statement timeouts bound.
const EVENT_WINDOW: Duration = Duration::from_secs(10);

/// Minimum time between two log lines about the same ongoing failure.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The store clock of the last successful poll, shared with the probe.
type StoreClock = Arc<Mutex<Option<OffsetDateTime>>>;

/// Starts the tasks that `layer` needs.
pub(crate) fn spawn(layer: &Arc<CacheLayer>, store: &Arc<dyn Store>) {
    let clock = StoreClock::default();
    if layer.health.is_some() {
        tokio::spawn(poll_events(
            Arc::downgrade(layer),
            Arc::clone(store),
            Arc::clone(&clock),
        ));
    }
    if layer.redis.is_some() {
        tokio::spawn(subscribe(Arc::downgrade(layer)));
        tokio::spawn(probe_redis(Arc::downgrade(layer), Arc::clone(store), clock));
    }
}

/// Applies one key event: the revoked state goes to Redis first, then the
/// local entry turns revoked, so that a local fill from Redis cannot bring
/// the old state back. A shortened expiry only drops the local entry, because
/// the rotating replica wrote the shorter expiry to Redis. Returns false when Redis should have been written but
/// was not, so the caller retries the event.
pub(crate) async fn apply_event(layer: &CacheLayer, event: &KeyEvent) -> bool {
    let mut written = true;
    if let (KeyEventKind::Revoked, Some(redis)) = (event.kind, &layer.redis) {
        if !redis.is_open() {
            written = redis
                .put(&event.digest, &Verdict::Revoked(None), layer.options.ttl)
                .await;
        }
    }
    // NOTE: a shortened expiry is not rewritten to Redis here. When the
    // rotating replica's one Redis write fails without opening the breaker,
    // Redis keeps the later expiry until its entry's TTL ends.
    match event.kind {
        KeyEventKind::Revoked => layer.local.revoke(&event.digest, None, layer.local.now()),
        _ => layer.local.invalidate(&event.digest),
    }
    written
}

/// Reads the store's key events every poll interval and applies the new
/// ones.
async fn poll_events(layer: Weak<CacheLayer>, store: Arc<dyn Store>, clock: StoreClock) {
    let Some(period) = layer.upgrade().map(|layer| layer.options.poll_interval) else {
        return;
    };
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut since: Option<OffsetDateTime> = None;
    let mut applied: HashMap<i64, OffsetDateTime> = HashMap::new();
    let mut applied_tenants: HashMap<i64, OffsetDateTime> = HashMap::new();
    let mut failing = FailureLog::default();

    loop {
        ticker.tick().await;
        let Some(layer) = layer.upgrade() else {
            return;
        };
        let started = layer.local.now();

        let window_start = since.map(|at| at - EVENT_WINDOW);
        let batch = match timeout(period * 4, store.key_events(window_start)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(err)) => {
                failing.record(|| tracing::warn!(error = %err, "reading key events failed"));
                continue;
            }
            Err(_) => {
                failing.record(|| tracing::warn!("reading key events timed out"));
                continue;
            }
        };

        if since.is_none() {
            // Entries cached before the first successful poll may predate
            // events that this poll cannot see any more.
            layer.local.clear();
            layer.tenants.clear();
        }
        for event in &batch.events {
            if applied.contains_key(&event.seq) {
                continue;
            }
            if apply_event(&layer, event).await {
                applied.insert(event.seq, batch.now);
            }
        }
        applied.retain(|_, seen| *seen >= batch.now - EVENT_WINDOW * 2);
        for event in &batch.tenant_events {
            if applied_tenants.insert(event.seq, batch.now).is_none() {
                layer.tenants.invalidate(event.tenant_id);
            }
        }
        applied_tenants.retain(|_, seen| *seen >= batch.now - EVENT_WINDOW * 2);

        since = Some(batch.now);
        *clock.lock().unwrap_or_else(PoisonError::into_inner) = Some(batch.now);
        if let Some(health) = &layer.health {
            health.record_poll(started);
        }
        if failing.recover() {
            tracing::info!("reading key events works again");
        }
    }
}

/// Listens for invalidations on Redis pub/sub, reconnecting with backoff.
async fn subscribe(layer: Weak<CacheLayer>) {
    let mut backoff = Duration::from_millis(100);
    let mut failing = FailureLog::default();
    loop {
        match listen(&layer).await {
            Listen::Stopped => return,
            Listen::Lost(error) => {
                failing.record(
                    || tracing::warn!(%error, "Redis invalidation subscription lost; reconnecting"),
                );
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Listen::Ended => backoff = Duration::from_millis(100),
        }
    }
}

enum Listen {
    /// The cache layer is gone.
    Stopped,
    /// The subscription could not be made or kept.
    Lost(String),
    /// The subscription worked for a while, then ended.
    Ended,
}

async fn listen(weak: &Weak<CacheLayer>) -> Listen {
    let Some(layer) = weak.upgrade() else {
        return Listen::Stopped;
    };
    let (Some(redis), Some(health)) = (&layer.redis, &layer.health) else {
        return Listen::Stopped;
    };
    let limit = redis.options().timeout.max(Duration::from_millis(250));
    let channel = redis.channel().to_owned();

    let pubsub = match timeout(limit, redis.client().get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(err)) => return Listen::Lost(err.to_string()),
        Err(_) => return Listen::Lost("connecting timed out".to_owned()),
    };
    let (mut sink, mut stream) = pubsub.split();
    match timeout(limit, sink.subscribe(&channel)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Listen::Lost(err.to_string()),
        Err(_) => return Listen::Lost("subscribing timed out".to_owned()),
    }
    health.record_subscribed(layer.local.now());
    tracing::debug!(channel, "subscribed to cache invalidations");

    let period = layer.options.max_staleness / 4;
    drop(layer);
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let outcome = loop {
        tokio::select! {
            message = stream.next() => {
                let Some(layer) = weak.upgrade() else { return Listen::Stopped };
                match message {
                    Some(message) => invalidate(&layer, message.get_payload_bytes()),
                    None => break Listen::Ended,
                }
            }
            _ = ticker.tick() => {
                let Some(layer) = weak.upgrade() else { return Listen::Stopped };
                let pinged = timeout(limit, sink.ping::<redis::Value>()).await;
                if !matches!(pinged, Ok(Ok(_))) {
                    break Listen::Lost("ping on the subscription failed".to_owned());
                }
                // Messages published before the ping arrived before its
                // reply; apply any still buffered, then vouch for them.
                while let Some(Some(message)) = stream.next().now_or_never() {
                    invalidate(&layer, message.get_payload_bytes());
                }
                if let Some(health) = &layer.health {
                    health.record_ping(layer.local.now());
                }
            }
        }
    };

    if let Some(health) = weak
        .upgrade()
        .as_ref()
        .and_then(|layer| layer.health.as_ref())
    {
        health.record_unsubscribed();
    }
    outcome
}

/// Applies an invalidation message: 32 bytes are a key digest, 16 bytes a
/// tenant id.
fn invalidate(layer: &CacheLayer, payload: &[u8]) {
    if let Ok(bytes) = <[u8; 32]>::try_from(payload) {
        layer.stats.invalidations_received.increment();
        layer.local.invalidate(&KeyDigest::from_bytes(bytes));
    } else if let Ok(bytes) = <[u8; 16]>::try_from(payload) {
        layer.stats.invalidations_received.increment();
        let tenant = TenantId::from_uuid(uuid::Uuid::from_bytes(bytes));
        layer.tenants.invalidate(tenant);
    } else {
        tracing::debug!(len = payload.len(), "ignored a malformed invalidation");
    }
}

/// Probes a skipped Redis. Once it responds, rewrites the revocations it
/// may have missed, then lets requests use it again.
async fn probe_redis(layer: Weak<CacheLayer>, store: Arc<dyn Store>, clock: StoreClock) {
    let Some(period) = layer.upgrade().and_then(|layer| {
        layer
            .redis
            .as_ref()
            .map(|redis| redis.options().probe_interval)
    }) else {
        return;
    };
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut lost_since: Option<OffsetDateTime> = None;

    loop {
        ticker.tick().await;
        let Some(layer) = layer.upgrade() else {
            return;
        };
        let Some(redis) = &layer.redis else {
            return;
        };
        if !redis.is_open() {
            lost_since = None;
            continue;
        }
        let known = *clock.lock().unwrap_or_else(PoisonError::into_inner);
        let lost = *lost_since.get_or_insert(known.unwrap_or_else(OffsetDateTime::now_utc));
        if !redis.probe().await {
            continue;
        }

        // Revokes made while Redis was skipped never reached it, so its
        // copies of those keys may still read as valid.
        let replayed = match store.key_events(Some(lost - EVENT_WINDOW)).await {
            Ok(batch) => {
                let mut complete = true;
                for event in &batch.events {
                    complete &= match event.kind {
                        KeyEventKind::Revoked => {
                            redis
                                .put_while_open(
                                    &event.digest,
                                    &Verdict::Revoked(None),
                                    layer.options.ttl,
                                )
                                .await
                        }
                        KeyEventKind::ExpiryShortened => {
                            repair_expiry(&layer, store.as_ref(), redis, &event.digest).await
                        }
                        _ => true,
                    };
                }
                complete
            }
            Err(err) => {
                tracing::debug!(error = %err, "cannot read key events to repair Redis yet");
                false
            }
        };
        if replayed {
            redis.close();
        }
    }
}

/// Writes a key's current expiry to Redis, whose copy may still carry the
/// later expiry from before a rotation. Returns whether that worked.
async fn repair_expiry(
    layer: &CacheLayer,
    store: &dyn Store,
    redis: &super::redis::RedisCache,
    digest: &KeyDigest,
) -> bool {
    match store.key_by_digest(digest).await {
        Ok(Some(record)) if record.info.revoked_at.is_none() => {
            let verdict = valid_verdict(&record.info);
            redis
                .put_while_open(digest, &verdict, layer.options.ttl)
                .await
        }
        Ok(_) => true,
        Err(err) => {
            tracing::debug!(error = %err, "cannot read a rotated key to repair Redis yet");
            false
        }
    }
}

/// Rate-limits log lines about an ongoing failure.
#[derive(Default)]
struct FailureLog {
    last_logged: Option<Instant>,
    failing: bool,
}

impl FailureLog {
    fn record(&mut self, log: impl FnOnce()) {
        self.failing = true;
        if self.last_logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            self.last_logged = Some(Instant::now());
            log();
        }
    }

    /// Returns true when this ends a failure.
    fn recover(&mut self) -> bool {
        self.last_logged = None;
        std::mem::take(&mut self.failing)
    }
}
