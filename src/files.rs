//! File helpers shared by the modules that write files (checkpoints, the synthetic dataset):
//! replacing a file atomically.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces the file `path` (its folder must exist) by `bytes`: written to a temporary sibling
/// of its own, synced, then renamed over `path`. A reader, in this process or another, sees the
/// old file or the new one, never part of one. Used for checkpoints and for the synthetic
/// dataset, which concurrent runs regenerate.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Process id and a per-process counter: no two writers, processes or threads, share one.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut temporary: PathBuf = path.to_path_buf();
    temporary.set_file_name(format!(
        ".{}.tmp-{}-{write}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, path)
}
