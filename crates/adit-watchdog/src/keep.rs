//! The firing alerts kept on disk across restarts: `alerts-firing.json` in
//! the spool's directory, replaced durably (`adit_core::durable`) after
//! each change of the firing set, read back at start (see
//! [`crate::Engine::restore`]).
//!
//! Invariants: the file is the whole firing set at one moment (never a
//! log); the writer keeps only the latest set (a `watch` channel: bounded
//! by construction) and writes off the async workers; a file that cannot
//! be read or parsed is reported, and nothing is restored from it.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::engine::FiringRecord;

/// The file's name in the state directory.
pub const FILE: &str = "alerts-firing.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    version: u32,
    firing: Vec<FiringRecord>,
}

/// The records in a file's bytes (pure).
pub fn parse(bytes: &[u8]) -> Result<Vec<FiringRecord>, String> {
    let kept: Kept = serde_json::from_slice(bytes).map_err(|e| format!("not readable: {e}"))?;
    if kept.version != 1 {
        return Err(format!("version {} (this adit reads 1)", kept.version));
    }
    Ok(kept.firing)
}

/// The file's bytes for `firing` (pure).
pub fn render(firing: &[FiringRecord]) -> Result<Vec<u8>, String> {
    let kept = Kept {
        version: 1,
        firing: firing.to_vec(),
    };
    serde_json::to_vec_pretty(&kept).map_err(|e| e.to_string())
}

/// Largest file read back (far above any real firing set).
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// What `dir` holds: nothing when there is no file (a first start).
pub fn load(dir: &Path) -> Result<Vec<FiringRecord>, String> {
    use std::io::Read;
    let path = dir.join(FILE);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} bytes", path.display()));
    }
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes every new firing set to `dir` until the sender is gone (the last
/// set is written before it returns).
pub async fn keep_firing(dir: PathBuf, mut sets: watch::Receiver<Vec<FiringRecord>>) {
    while sets.changed().await.is_ok() {
        let bytes = match render(&sets.borrow_and_update()) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "could not render the firing alerts: the file keeps the last set");
                continue;
            }
        };
        let at = dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            adit_core::durable::replace_file(&at, FILE, &bytes)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                file = %dir.join(FILE).display(),
                error = %e,
                "could not keep the firing alerts on disk: after a restart they would not be restored"
            ),
            Err(e) => tracing::error!(error = %e, "the firing alerts' writer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_an_error_not_a_guess() {
        let firing = vec![FiringRecord {
            labels: vec![
                ("alertname".into(), "CoHigh".into()),
                ("point".into(), "bore_a.co_1".into()),
            ],
            starts_at_us: 1_765_000_000_000_000,
        }];
        assert_eq!(parse(&render(&firing).unwrap()).unwrap(), firing);
        assert!(parse(b"{").is_err());
        assert!(parse(br#"{"version":2,"firing":[]}"#)
            .unwrap_err()
            .contains("version 2"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![], "first start");
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        assert!(load(dir.path()).unwrap_err().contains(FILE));
    }

    #[tokio::test]
    async fn the_last_set_is_on_disk_when_the_writer_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = watch::channel(Vec::new());
        let writer = tokio::spawn(keep_firing(dir.path().to_path_buf(), rx));
        let one = FiringRecord {
            labels: vec![("alertname".into(), "A".into())],
            starts_at_us: 1,
        };
        tx.send_replace(vec![one.clone()]);
        tx.send_replace(vec![one.clone(), one.clone()]);
        drop(tx);
        writer.await.unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![one.clone(), one]);
    }
}
