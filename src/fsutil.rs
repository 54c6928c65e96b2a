//! Atomic file writes, for the files the exporter writes: the detection state
//! file and the output of `once --output`.
//!
//! Place in the data flow: beside it, a leaf that depends on nothing else. A
//! reader (node_exporter's textfile collector, the next start of the
//! exporter) sees the old file or the new one, never half of one.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed to disk, renamed over the target, and the directory
/// flushed. The temporary file is removed when anything fails.
///
/// The temporary file has a random name and is created exclusively
/// (`O_CREAT|O_EXCL`, through the `tempfile` crate), so nothing already at a
/// name (a symlink, a FIFO, another writer's file) is followed, opened or
/// overwritten. The new file keeps the permissions of the file it replaces
/// (a `0600` state file stays `0600`); a new target gets the permissions a
/// plain create gives (`0666` less the umask), as before.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let previous = std::fs::symlink_metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.permissions());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Subject to the umask, as `File::create` is.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // Dropping the temporary file on any error below removes it.
    let mut file = builder.tempfile_in(dir)?;
    if let Some(permissions) = previous {
        // Set on the open file, so the umask does not narrow them.
        file.as_file().set_permissions(permissions)?;
    }
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("hss-fsutil-{label}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn the_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = scratch("replace");
        let path = dir.path().join("out.prom");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomically(&dir.path().join("missing/x"), b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The temporary name the writer used to use: `.{name}.tmp.{pid}`.
    #[cfg(unix)]
    fn old_temporary_name(dir: &Path, name: &str) -> std::path::PathBuf {
        dir.join(format!(".{name}.tmp.{}", std::process::id()))
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_old_temporary_name_is_not_followed() {
        let dir = scratch("symlink");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&victim, old_temporary_name(dir.path(), "state.json")).unwrap();
        write_atomically(&path, b"{\"v\":1}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"v\":1}\n");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_at_the_old_temporary_name_does_not_block_the_write() {
        use std::os::unix::fs::FileTypeExt as _;
        let dir = scratch("fifo");
        let path = dir.path().join("out.prom");
        let fifo = old_temporary_name(dir.path(), "out.prom");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // The old writer opened this name for writing and waited for a
        // reader forever; now the name is never opened.
        write_atomically(&path, b"metric 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "metric 1\n");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }

    #[cfg(unix)]
    #[test]
    fn permissions_of_the_replaced_file_are_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("mode");
        let private = dir.path().join("state.json");
        std::fs::write(&private, "old").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&private, b"new").unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let shared = dir.path().join("out.prom");
        std::fs::write(&shared, "old").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&shared, b"new").unwrap();
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "a textfile-collector file stays readable");

        // A new file gets what a plain create gives (0666 less the umask),
        // not the temporary file's 0600.
        let fresh = dir.path().join("fresh.prom");
        write_atomically(&fresh, b"x").unwrap();
        let reference = dir.path().join("reference");
        std::fs::File::create(&reference).unwrap();
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            std::fs::metadata(&reference).unwrap().permissions().mode() & 0o777
        );
    }
}
