//! One partition's log: one append-only file of record batches, an index of them in memory, and
//! the producers' last sequences (rebuilt from the file at open, as Kafka rebuilds its snapshots).
//!
//! Durability: a batch is appended under the partition's lock, then `sync_to` makes it durable
//! (fdatasync, one for every append that arrived meanwhile: group commit). Readers see only what
//! is durable: the high watermark is the end of the last sync, so no consumer can apply a record
//! that a crash could take back.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::batch::{self, BatchHeader, LOG_OVERHEAD};

/// Where one batch is in the file.
#[derive(Debug, Clone, Copy)]
struct Entry {
    base: i64,
    last: i64,
    pos: u64,
    len: u32,
    max_timestamp: i64,
}

/// The last batches a producer wrote here, to answer a retried batch with its first offsets
/// instead of writing it twice (Kafka keeps five: librdkafka has at most five in flight).
#[derive(Debug, Clone, Default)]
struct ProducerState {
    epoch: i16,
    /// (first sequence, last sequence, base offset), oldest first.
    recent: Vec<(i32, i32, i64)>,
}

const RECENT_BATCHES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Batch(#[from] batch::BatchError),
    #[error("producer epoch {got} is older than the partition's {current}")]
    FencedEpoch { got: i16, current: i16 },
    #[error("writing the log: {0}")]
    Io(#[from] std::io::Error),
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The first offset given to the request's first batch (or the original one of a retried
    /// batch that was already written).
    pub base_offset: i64,
    /// The log's end after the append: what must be synced before the producer is answered.
    pub end: i64,
    /// Batches not written again because the producer had written them before.
    pub duplicates: usize,
}

struct Inner {
    file: File,
    size: u64,
    entries: Vec<Entry>,
    next_offset: i64,
    producers: HashMap<i64, ProducerState>,
}

pub struct Partition {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// A second handle on the file for reads and syncs, never used to write.
    reader: Arc<File>,
    /// Offsets below this are durable and visible (the high watermark).
    synced: AtomicI64,
    sync_lock: tokio::sync::Mutex<()>,
    /// Woken after every sync (fetches waiting for data).
    data: Arc<tokio::sync::Notify>,
}

impl Partition {
    /// Opens (or creates) the log at `path`, checking every batch; a torn or corrupt tail (a
    /// crash mid-write, which was never acknowledged) is cut off.
    pub fn open(path: &Path, data: Arc<tokio::sync::Notify>) -> std::io::Result<Partition> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut entries = Vec::new();
        let mut producers: HashMap<i64, ProducerState> = HashMap::new();
        let mut pos = 0u64;
        let mut next_offset = 0i64;
        {
            file.seek(SeekFrom::Start(0))?;
            let mut r = BufReader::with_capacity(1 << 20, &mut file);
            let mut buf = Vec::new();
            loop {
                let mut head = [0u8; LOG_OVERHEAD];
                if pos + LOG_OVERHEAD as u64 > len || r.read_exact(&mut head).is_err() {
                    break;
                }
                let batch_len = i32::from_be_bytes(head[8..12].try_into().unwrap());
                if batch_len <= 0 || pos + LOG_OVERHEAD as u64 + batch_len as u64 > len {
                    break;
                }
                buf.clear();
                buf.extend_from_slice(&head);
                buf.resize(LOG_OVERHEAD + batch_len as usize, 0);
                if r.read_exact(&mut buf[LOG_OVERHEAD..]).is_err() {
                    break;
                }
                let Ok(h) = BatchHeader::parse(&buf) else {
                    break;
                };
                if h.verify(&buf).is_err() || h.base_offset != next_offset {
                    break;
                }
                entries.push(Entry {
                    base: h.base_offset,
                    last: h.last_offset(),
                    pos,
                    len: h.total_len() as u32,
                    max_timestamp: h.max_timestamp,
                });
                if h.is_idempotent() {
                    remember(&mut producers, &h);
                }
                pos += h.total_len() as u64;
                next_offset = h.last_offset() + 1;
            }
        }
        if pos < len {
            tracing::warn!(
                log = %path.display(),
                kept_bytes = pos,
                cut_bytes = len - pos,
                "the log's tail was torn or corrupt (a crash mid-write, never acknowledged); cut off"
            );
            file.set_len(pos)?;
            file.sync_all()?;
        }
        let reader = Arc::new(File::open(path)?);
        Ok(Partition {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                size: pos,
                entries,
                next_offset,
                producers,
            }),
            reader,
            synced: AtomicI64::new(next_offset),
            sync_lock: tokio::sync::Mutex::new(()),
            data,
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.synced.load(Ordering::Acquire)
    }

    /// The first offset still in the log (nothing is ever deleted by age or size).
    pub fn log_start(&self) -> i64 {
        0
    }

    /// The end of what was written, synced or not.
    pub fn log_end(&self) -> i64 {
        self.inner.lock().unwrap().next_offset
    }

    /// Appends a produce request's batches (already split and checked) in order. A batch an
    /// idempotent producer retried after it was written is not written again.
    pub fn append(
        &self,
        records: &mut [u8],
        batches: &[(BatchHeader, std::ops::Range<usize>)],
    ) -> Result<Appended, AppendError> {
        let mut inner = self.inner.lock().unwrap();
        let mut first = None;
        let mut duplicates = 0;
        // Check every batch before writing any, so a refused request writes nothing.
        for (h, _) in batches {
            if let Some(state) = h
                .is_idempotent()
                .then(|| inner.producers.get(&h.producer_id))
                .flatten()
            {
                if h.producer_epoch < state.epoch {
                    return Err(AppendError::FencedEpoch {
                        got: h.producer_epoch,
                        current: state.epoch,
                    });
                }
            }
        }
        let start_size = inner.size;
        let start_offset = inner.next_offset;
        let mut out = Vec::with_capacity(batches.iter().map(|(_, r)| r.len()).sum());
        let mut headers = Vec::with_capacity(batches.len());
        let mut next = inner.next_offset;
        for (h, range) in batches {
            if h.is_idempotent() {
                if let Some(base) = inner.producers.get(&h.producer_id).and_then(|s| {
                    (s.epoch == h.producer_epoch)
                        .then(|| {
                            s.recent
                                .iter()
                                .find(|(f, l, _)| *f == h.base_sequence && *l == h.last_sequence())
                                .map(|(_, _, base)| *base)
                        })
                        .flatten()
                }) {
                    duplicates += 1;
                    first.get_or_insert(base);
                    continue;
                }
            }
            let bytes = &mut records[range.clone()];
            batch::set_base_offset(bytes, next);
            out.extend_from_slice(bytes);
            let mut h = *h;
            h.base_offset = next;
            first.get_or_insert(next);
            next = h.last_offset() + 1;
            headers.push(h);
        }
        if !out.is_empty() {
            if let Err(e) = inner.file.write_all(&out) {
                // Leave the file as it was: a half-written request was never acknowledged.
                let _ = inner.file.set_len(start_size);
                return Err(e.into());
            }
            let mut pos = start_size;
            for h in &headers {
                inner.entries.push(Entry {
                    base: h.base_offset,
                    last: h.last_offset(),
                    pos,
                    len: h.total_len() as u32,
                    max_timestamp: h.max_timestamp,
                });
                pos += h.total_len() as u64;
                if h.is_idempotent() {
                    remember(&mut inner.producers, h);
                }
            }
            inner.size = pos;
            inner.next_offset = next;
        }
        Ok(Appended {
            base_offset: first.unwrap_or(start_offset),
            end: inner.next_offset,
            duplicates,
        })
    }

    /// Returns once every offset below `end` is on disk (and visible to consumers).
    pub async fn sync_to(&self, end: i64) -> std::io::Result<()> {
        if self.high_watermark() >= end {
            return Ok(());
        }
        let _turn = self.sync_lock.lock().await;
        if self.high_watermark() >= end {
            return Ok(());
        }
        // Everything written so far goes into this one sync.
        let target = self.log_end();
        let file = self.reader.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(std::io::Error::other)??;
        self.synced.fetch_max(target, Ordering::AcqRel);
        self.data.notify_waiters();
        Ok(())
    }

    /// Whole batches from the one holding `offset`, below the high watermark, up to `max_bytes`
    /// (but always the first one, however large: a record is never too big to be read back).
    pub fn read(&self, offset: i64, max_bytes: usize) -> std::io::Result<Vec<u8>> {
        let hw = self.high_watermark();
        let (pos, len) = {
            let inner = self.inner.lock().unwrap();
            let from = inner.entries.partition_point(|e| e.last < offset);
            let mut len = 0usize;
            let mut pos = None;
            for e in inner.entries[from..].iter() {
                if e.last >= hw || (len > 0 && len + e.len as usize > max_bytes) {
                    break;
                }
                pos.get_or_insert(e.pos);
                len += e.len as usize;
            }
            match pos {
                Some(p) => (p, len),
                None => return Ok(Vec::new()),
            }
        };
        let mut buf = vec![0u8; len];
        self.reader.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// The first offset of the first batch whose records may be as late as `timestamp` (ms), or
    /// `None` when every record is older.
    pub fn offset_for_time(&self, timestamp: i64) -> Option<i64> {
        let hw = self.high_watermark();
        let inner = self.inner.lock().unwrap();
        inner
            .entries
            .iter()
            .find(|e| e.max_timestamp >= timestamp && e.last < hw)
            .map(|e| e.base)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn remember(producers: &mut HashMap<i64, ProducerState>, h: &BatchHeader) {
    let state = producers.entry(h.producer_id).or_default();
    if h.producer_epoch != state.epoch {
        // A new epoch starts its sequences again (KIP-360's bump, or a restarted producer).
        state.epoch = h.producer_epoch;
        state.recent.clear();
    }
    if state.recent.len() == RECENT_BATCHES {
        state.recent.remove(0);
    }
    state
        .recent
        .push((h.base_sequence, h.last_sequence(), h.base_offset));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::batch;

    fn notify() -> Arc<tokio::sync::Notify> {
        Arc::new(tokio::sync::Notify::new())
    }

    fn append(p: &Partition, mut bytes: Vec<u8>) -> Result<Appended, AppendError> {
        let parts = batch::split(&bytes).unwrap();
        p.append(&mut bytes, &parts)
    }

    #[tokio::test]
    async fn appends_sync_and_read_back_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let p = Partition::open(&path, notify()).unwrap();
        let a = append(&p, batch(3, -1, -1, -1)).unwrap();
        assert_eq!((a.base_offset, a.end), (0, 3));
        // Written but not synced: not visible.
        assert_eq!(p.high_watermark(), 0);
        assert!(p.read(0, 1 << 20).unwrap().is_empty());
        p.sync_to(a.end).await.unwrap();
        assert_eq!(p.high_watermark(), 3);
        let b = append(&p, batch(2, -1, -1, -1)).unwrap();
        assert_eq!(b.base_offset, 3);
        p.sync_to(b.end).await.unwrap();
        let bytes = p.read(4, 1 << 20).unwrap();
        let parts = batch::split(&bytes).unwrap();
        assert_eq!(
            parts.len(),
            1,
            "the batch holding offset 4, and what follows"
        );
        assert_eq!(parts[0].0.base_offset, 3);
        drop(p);
        let p = Partition::open(&path, notify()).unwrap();
        assert_eq!(p.high_watermark(), 5);
        let parts = batch::split(&p.read(0, 1 << 20).unwrap()).unwrap();
        assert_eq!(
            parts.iter().map(|(h, _)| h.base_offset).collect::<Vec<_>>(),
            [0, 3]
        );
    }

    #[tokio::test]
    async fn the_first_batch_is_read_however_large() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(&dir.path().join("0.log"), notify()).unwrap();
        let a = append(&p, batch(1000, -1, -1, -1)).unwrap();
        append(&p, batch(1, -1, -1, -1)).unwrap();
        p.sync_to(a.end + 1).await.unwrap();
        let parts = batch::split(&p.read(0, 10).unwrap()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0.records, 1000);
    }

    #[tokio::test]
    async fn a_retried_batch_is_answered_with_its_first_offsets_and_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let p = Partition::open(&path, notify()).unwrap();
        append(&p, batch(2, 42, 0, 0)).unwrap();
        append(&p, batch(2, 42, 0, 2)).unwrap();
        let again = append(&p, batch(2, 42, 0, 0)).unwrap();
        assert_eq!((again.base_offset, again.duplicates, again.end), (0, 1, 4));
        // A bumped epoch (KIP-360) starts over at sequence 0 and is written.
        let bumped = append(&p, batch(2, 42, 1, 0)).unwrap();
        assert_eq!((bumped.base_offset, bumped.duplicates), (4, 0));
        // The old epoch is fenced.
        assert!(matches!(
            append(&p, batch(1, 42, 0, 4)),
            Err(AppendError::FencedEpoch { .. })
        ));
        p.sync_to(6).await.unwrap();
        drop(p);
        // The producers' state comes back from the file.
        let p = Partition::open(&path, notify()).unwrap();
        let again = append(&p, batch(2, 42, 1, 0)).unwrap();
        assert_eq!((again.base_offset, again.duplicates), (4, 1));
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let p = Partition::open(&path, notify()).unwrap();
        let a = append(&p, batch(2, -1, -1, -1)).unwrap();
        p.sync_to(a.end).await.unwrap();
        drop(p);
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&batch(3, -1, -1, -1)[..40]).unwrap();
        drop(f);
        let p = Partition::open(&path, notify()).unwrap();
        assert_eq!(p.high_watermark(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        let b = append(&p, batch(1, -1, -1, -1)).unwrap();
        assert_eq!(b.base_offset, 2);
    }
}
