//! What a processed file leaves behind: its receipt, and the sha256 index that recognises a file
//! dropped again (`<root>/.ingested/<sha256>`, holding the name of the file that was ingested).

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

#[derive(Debug, Default, Serialize)]
pub struct Receipt {
    pub file: String,
    pub sha256: String,
    pub accepted: usize,
    pub rejected: usize,
    /// Where the first chunk of records was written (a position token).
    pub first_position: Option<String>,
    /// Every partition the file wrote to, at its highest offset: `X-Min-Position` with it waits
    /// for the whole file.
    pub last_position: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// Why the file as a whole was not taken (it is then in `failed/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn sha256(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn marker(root: &Path, sha256: &str) -> PathBuf {
    root.join(".ingested").join(sha256)
}

/// The file an identical one was ingested as, if any.
pub async fn ingested_as(root: &Path, sha256: &str) -> Option<String> {
    tokio::fs::read_to_string(marker(root, sha256)).await.ok()
}

pub async fn mark_ingested(root: &Path, sha256: &str, file: &str) -> std::io::Result<()> {
    let path = marker(root, sha256);
    tokio::fs::create_dir_all(path.parent().unwrap_or(root)).await?;
    write_atomically(&path, file.as_bytes()).await
}

pub async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

/// `name` in `dir`, or `<stem>.<n>.<ext>` when an earlier file of that name is already there.
pub async fn free_name(dir: &Path, name: &str) -> String {
    if tokio::fs::metadata(dir.join(name)).await.is_err() {
        return name.to_string();
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    for n in 1.. {
        let candidate = if ext.is_empty() {
            format!("{stem}.{n}")
        } else {
            format!("{stem}.{n}.{ext}")
        };
        if tokio::fs::metadata(dir.join(&candidate)).await.is_err() {
            return candidate;
        }
    }
    unreachable!("some name is free")
}
