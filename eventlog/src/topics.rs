//! The topics: one directory each under `<data>/topics/`, holding `topic.json` and one log file per
//! partition. Creating writes a directory aside and renames it in; deleting renames one topic's
//! directory out of the way and removes it, and touches no other topic.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::partition::Partition;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

pub struct Topic {
    pub meta: TopicMeta,
    pub partitions: Vec<Arc<Partition>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic name {0:?} is not valid (1-249 of [a-zA-Z0-9._-], not . or ..)")]
    InvalidName(String),
    #[error("topic {0} already exists")]
    Exists(String),
    #[error("no topic {0}")]
    Unknown(String),
    #[error("partitions must be 1 to {max}, not {got}")]
    Partitions { got: i32, max: i32 },
    #[error("this broker keeps one copy: replication factor {0} is impossible")]
    Replication(i16),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("topic.json: {0}")]
    Meta(#[from] serde_json::Error),
}

pub const MAX_PARTITIONS: i32 = 1024;

pub struct Topics {
    dir: PathBuf,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    data: Arc<tokio::sync::Notify>,
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl Topics {
    /// Opens every topic under `<data>/topics/` (checking each partition's log).
    pub fn open(data_dir: &Path, data: Arc<tokio::sync::Notify>) -> Result<Topics, TopicError> {
        let dir = data_dir.join("topics");
        std::fs::create_dir_all(&dir)?;
        // Leftovers of a create or delete cut short by a crash.
        for entry in std::fs::read_dir(data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("creating-") || name.starts_with("deleting-") {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let mut topics = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta: TopicMeta =
                serde_json::from_slice(&std::fs::read(entry.path().join("topic.json"))?)?;
            let topic = open_topic(&entry.path(), meta, &data)?;
            topics.insert(topic.meta.name.clone(), Arc::new(topic));
        }
        Ok(Topics {
            dir,
            topics: RwLock::new(topics),
            data,
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        all
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topic = self.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get(p).cloned())
    }

    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        if !valid_name(name) {
            return Err(TopicError::InvalidName(name.to_string()));
        }
        let partitions = if partitions == -1 { 1 } else { partitions };
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::Partitions {
                got: partitions,
                max: MAX_PARTITIONS,
            });
        }
        if replication != -1 && replication != 1 {
            return Err(TopicError::Replication(replication));
        }
        let mut topics = self.topics.write().unwrap();
        if topics.contains_key(name) {
            return Err(TopicError::Exists(name.to_string()));
        }
        let meta = TopicMeta {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions,
            configs,
        };
        if validate_only {
            return Ok(Arc::new(Topic {
                meta,
                partitions: Vec::new(),
            }));
        }
        let aside = self
            .dir
            .parent()
            .unwrap()
            .join(format!("creating-{}", meta.id));
        std::fs::create_dir_all(&aside)?;
        for p in 0..partitions {
            std::fs::File::create(aside.join(format!("{p}.log")))?.sync_all()?;
        }
        write_synced(
            &aside.join("topic.json"),
            &serde_json::to_vec_pretty(&meta)?,
        )?;
        let target = self.dir.join(name);
        std::fs::rename(&aside, &target)?;
        sync_dir(&self.dir)?;
        let topic = Arc::new(open_topic(&target, meta, &self.data)?);
        topics.insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Deletes this one topic and its records.
    pub fn delete(&self, name: &str) -> Result<TopicMeta, TopicError> {
        let mut topics = self.topics.write().unwrap();
        let Some(topic) = topics.get(name).cloned() else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        let aside = self
            .dir
            .parent()
            .unwrap()
            .join(format!("deleting-{}", topic.meta.id));
        std::fs::rename(self.dir.join(name), &aside)?;
        sync_dir(&self.dir)?;
        topics.remove(name);
        drop(topics);
        std::fs::remove_dir_all(&aside)?;
        tracing::warn!(topic = name, "topic deleted (only this topic)");
        Ok(topic.meta.clone())
    }
}

fn open_topic(
    dir: &Path,
    meta: TopicMeta,
    data: &Arc<tokio::sync::Notify>,
) -> Result<Topic, TopicError> {
    let partitions = (0..meta.partitions)
        .map(|p| Partition::open(&dir.join(format!("{p}.log")), data.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Topic { meta, partitions })
}

pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify() -> Arc<tokio::sync::Notify> {
        Arc::new(tokio::sync::Notify::new())
    }

    #[test]
    fn deleting_one_topic_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::open(dir.path(), notify()).unwrap();
        for name in ["keep-a", "keep-b", "scratch"] {
            topics.create(name, 3, -1, BTreeMap::new(), false).unwrap();
        }
        topics.delete("scratch").unwrap();
        assert!(topics.get("scratch").is_none());
        drop(topics);
        let topics = Topics::open(dir.path(), notify()).unwrap();
        let names: Vec<_> = topics.all().iter().map(|t| t.meta.name.clone()).collect();
        assert_eq!(names, ["keep-a", "keep-b"]);
        assert_eq!(topics.get("keep-a").unwrap().partitions.len(), 3);
    }

    #[test]
    fn refuses_bad_names_counts_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::open(dir.path(), notify()).unwrap();
        for bad in ["", ".", "..", "a/b", "../x", &"x".repeat(250)] {
            assert!(matches!(
                topics.create(bad, 1, 1, BTreeMap::new(), false),
                Err(TopicError::InvalidName(_))
            ));
        }
        assert!(matches!(
            topics.create("t", 0, 1, BTreeMap::new(), false),
            Err(TopicError::Partitions { .. })
        ));
        assert!(matches!(
            topics.create("t", 1, 3, BTreeMap::new(), false),
            Err(TopicError::Replication(3))
        ));
        topics.create("t", 1, 1, BTreeMap::new(), false).unwrap();
        assert!(matches!(
            topics.create("t", 1, 1, BTreeMap::new(), false),
            Err(TopicError::Exists(_))
        ));
        assert!(matches!(topics.delete("nope"), Err(TopicError::Unknown(_))));
    }
}
