//! The core's errors as the exception classes of `tether.errors` (defined in Python, where
//! they carry typed attributes and docstrings; raised from here).

use pyo3::PyErr;
use tether_core::client::SendError;
use tether_core::server::{CommandError as Refused, RestoreError};

pyo3::import_exception!(tether.errors, ClientClosed);
pyo3::import_exception!(tether.errors, Rejected);
pyo3::import_exception!(tether.errors, AuthenticationFailed);
pyo3::import_exception!(tether.errors, VersionMismatch);
pyo3::import_exception!(tether.errors, ProtocolViolation);
pyo3::import_exception!(tether.errors, GaveUp);
pyo3::import_exception!(tether.errors, OutboxFull);
pyo3::import_exception!(tether.errors, EmptyContent);
pyo3::import_exception!(tether.errors, RequestIdInUse);
pyo3::import_exception!(tether.errors, UnknownSession);
pyo3::import_exception!(tether.errors, UnknownConnection);
pyo3::import_exception!(tether.errors, ReservedName);
pyo3::import_exception!(tether.errors, AlreadyAnswered);
pyo3::import_exception!(tether.errors, CommandError);
pyo3::import_exception!(tether.errors, SnapshotError);
pyo3::import_exception!(tether.errors, ConfigError);

/// A refused `send`.
pub fn send_error(err: SendError) -> PyErr {
    let text = err.to_string();
    match err {
        SendError::Closed => ClientClosed::new_err(text),
        SendError::OutboxFull { .. } => OutboxFull::new_err(text),
        SendError::EmptyContent => EmptyContent::new_err(text),
        SendError::DuplicateRequestId(_) => RequestIdInUse::new_err(text),
    }
}

/// A refused server command.
pub fn command_error(err: Refused) -> PyErr {
    let text = err.to_string();
    match err {
        Refused::UnknownSession(_) => UnknownSession::new_err(text),
        Refused::UnknownConnection(_) => UnknownConnection::new_err(text),
        Refused::ReservedField(_) | Refused::ReservedKind(_) => ReservedName::new_err(text),
        Refused::AlreadyAnswered(_) => AlreadyAnswered::new_err(text),
        // `StoreMode` and future variants: the binding never runs the machine on a store.
        _ => CommandError::new_err(text),
    }
}

/// A snapshot that cannot be restored (or read).
pub fn restore_error(err: RestoreError) -> PyErr {
    SnapshotError::new_err(err.to_string())
}

/// A snapshot that is not valid JSON of the right shape.
pub fn snapshot_format(err: serde_json::Error) -> PyErr {
    SnapshotError::new_err(format!("not a tether snapshot: {err}"))
}

/// A configuration value the core refuses.
pub fn config(text: impl Into<String>) -> PyErr {
    ConfigError::new_err(text.into())
}
