//! Snapshot files: a server's sessions saved atomically (a temporary file, then a rename) and
//! loaded back at start.

use std::path::Path;

use tether_core::server::ServerSnapshot;

use super::ServerError;

/// Writes `snapshot` to `path` atomically (temporary file, then rename).
pub fn save_snapshot(path: &Path, snapshot: &ServerSnapshot) -> Result<(), ServerError> {
    let file_err = |source| ServerError::SnapshotFile {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_vec(snapshot).map_err(|source| ServerError::SnapshotFormat {
        path: path.display().to_string(),
        source,
    })?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).map_err(file_err)?;
    std::fs::rename(&tmp, path).map_err(file_err)
}

/// Reads a snapshot written by [`save_snapshot`]; `Ok(None)` if the file does not exist.
pub fn load_snapshot(path: &Path) -> Result<Option<ServerSnapshot>, ServerError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ServerError::SnapshotFormat {
                    path: path.display().to_string(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ServerError::SnapshotFile {
            path: path.display().to_string(),
            source,
        }),
    }
}
