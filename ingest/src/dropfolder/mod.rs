//! The drop folder (API.md): `<root>/<source_id>/inbox/*.{ndjson,json,hl7}`, polled. A file is
//! claimed by renaming it into `processing/`, streamed in chunks, and moved to `done/` with a
//! receipt (or to `failed/`). Whatever is in `processing/` at start was interrupted: it is
//! processed again from the top; re-published records are identical, so the views do not change.

mod file;
pub mod lines;
mod receipt;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::publish::Publisher;
use crate::sources::Registry;

pub const CHANNEL: &str = "drop_folder";
const POLL: Duration = Duration::from_millis(500);
/// Records published at once: bounded memory, and few enough to wait for their acks.
const CHUNK: usize = 500;

#[derive(Clone)]
pub struct DropFolder {
    pub root: PathBuf,
    pub publisher: Publisher,
    pub registry: Registry,
    /// The longest line (or HL7 message) taken; longer ones are rejected, not buffered.
    pub max_line_bytes: usize,
}

impl DropFolder {
    /// Poll every source's inbox until `shutdown`; a file being processed when it comes is left
    /// in `processing/` and finished at the next start.
    pub async fn watch(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(root = %self.root.display(), "drop folder watching");
        loop {
            if self.registry.is_caught_up() {
                if let Err(e) = self.sweep(&shutdown).await {
                    tracing::warn!(error = %e, "drop folder sweep failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = crate::mllp::stopped(&mut shutdown) => return,
            }
        }
    }

    /// One pass: interrupted files first, then the inboxes, oldest name first.
    pub async fn sweep(&self, shutdown: &watch::Receiver<bool>) -> std::io::Result<()> {
        let mut sources = Vec::new();
        let mut dir = match tokio::fs::read_dir(&self.root).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.file_type().await?.is_dir() && !name.starts_with('.') {
                sources.push(name);
            }
        }
        sources.sort();
        for source_id in sources {
            let base = self.root.join(&source_id);
            for stage in ["processing", "inbox"] {
                for path in files(&base.join(stage)).await? {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    let claimed = if stage == "inbox" {
                        match claim(&base, &path).await {
                            Ok(p) => p,
                            // Another instance took it, or it vanished: not ours.
                            Err(_) => continue,
                        }
                    } else {
                        path
                    };
                    file::process(self, &source_id, &claimed, shutdown).await;
                }
            }
        }
        Ok(())
    }
}

/// Regular files in `dir`, by name, without our own side files.
async fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type().await?.is_file()
            && !name.starts_with('.')
            && !name.ends_with(".receipt.json")
            && !name.ends_with(".errors.ndjson")
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Move `inbox/<file>` to `processing/<file>`: a rename, so exactly one claimant wins.
async fn claim(base: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let processing = base.join("processing");
    tokio::fs::create_dir_all(&processing).await?;
    let target = processing.join(path.file_name().unwrap_or_default());
    tokio::fs::rename(path, &target).await?;
    Ok(target)
}
