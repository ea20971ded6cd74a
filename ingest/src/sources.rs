//! The source registry as ingest sees it: every `SourceRegistered` event on the sources topic,
//! replayed at start and tailed after, so any ingest instance knows every source and its key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use schemas::{topics, SourceRegistered};
use sha2::{Digest, Sha256};

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<HashMap<String, SourceRegistered>>>,
    caught_up: Arc<AtomicBool>,
}

impl Registry {
    pub fn get(&self, source_id: &str) -> Option<SourceRegistered> {
        self.inner
            .read()
            .expect("registry lock")
            .get(source_id)
            .cloned()
    }

    pub fn apply(&self, event: SourceRegistered) {
        self.inner
            .write()
            .expect("registry lock")
            .insert(event.source_id.clone(), event);
    }

    /// True once the registry holds everything that was on the topic at start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// The source a bearer key belongs to, if it is that source's key.
    pub fn authenticate(&self, source_id: &str, api_key: &str) -> Option<SourceRegistered> {
        let source = self.get(source_id)?;
        (source.api_key_sha256 == key_digest(api_key)).then_some(source)
    }

    /// The source whose key this is, whichever it is.
    pub fn by_key(&self, api_key: &str) -> Option<SourceRegistered> {
        let digest = key_digest(api_key);
        self.inner
            .read()
            .expect("registry lock")
            .values()
            .find(|s| s.api_key_sha256 == digest)
            .cloned()
    }
}

pub fn key_digest(api_key: &str) -> String {
    hex::encode(Sha256::digest(api_key.as_bytes()))
}

/// A new source API key: 244 random bits.
pub fn new_api_key() -> String {
    format!(
        "hie_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Replay the sources topic from the beginning (aside, swapped in whole), then follow it. Runs
/// until the process stops.
pub async fn follow(registry: Registry, brokers: String) {
    platform::kafka::follow(brokers, &topics::SOURCES, registry).await
}

impl platform::kafka::Replica for Registry {
    type Event = SourceRegistered;
    type State = HashMap<String, SourceRegistered>;

    fn apply_to(state: &mut Self::State, event: SourceRegistered, _offset: i64) {
        state.insert(event.source_id.clone(), event);
    }

    fn install(&self, state: Self::State) {
        *self.inner.write().expect("registry lock") = state;
        self.caught_up.store(true, Ordering::Release);
    }

    fn apply(&self, event: SourceRegistered, _offset: i64) {
        Registry::apply(self, event);
    }
}
