//! Small files replaced durably: the one implementation of "write a
//! temporary file, fsync it, rename it over the old one, fsync the
//! directory" (the spool's ledger and point tables, the watchdog's firing
//! alerts).
//!
//! Invariant: after [`replace_file`] returns Ok, a crash leaves either the
//! new content or (had it failed part-way) the old one, never a mix; a
//! stale `<name>.tmp` from a crash is overwritten by the next call.

use std::io::Write;
use std::path::Path;

/// Replaces `dir/name` with `bytes` durably (see the module).
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// fsyncs a directory so that a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_a_stale_temporary_does_not_matter() {
        let dir = std::env::temp_dir().join(format!("adit-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json.tmp"), b"half a file from a crash").unwrap();
        replace_file(&dir, "state.json", b"one").unwrap();
        replace_file(&dir, "state.json", b"two").unwrap();
        assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), b"two");
        assert!(!dir.join("state.json.tmp").exists());
        assert!(replace_file(&dir.join("missing"), "x", b"").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
