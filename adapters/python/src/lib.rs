//! `tether._native`: tether-core's sans-IO machines for Python.
//!
//! Each machine is a thin binding over the core's public API, one module per machine, so a
//! change of the core's API is a change here and nowhere else:
//!
//! * [`client`]: `ClientMachine` (the client connection machine) and the client's events;
//! * [`server`]: `ServerMachine` (the gateway machine) and the server's events.
//!
//! The same drive contract as in Rust: after every `handle_*` call or command, drain
//! `poll_transmit(s)` and `poll_event(s)`, then read `poll_timeout` and call `handle_timeout`
//! when it passes. `now` is the application's monotonic clock in seconds (a float, e.g.
//! `asyncio.get_running_loop().time()`); the machines read no clock themselves. The asyncio
//! loops on top live in the pure-Python package `tether` (`tether.connect`, `tether.serve`).
//!
//! Errors are raised as the exception classes of `tether.errors` (module `errors`); values cross
//! as plain Python objects (JSON values as `dict`/`list`/`str`/`int`/`float`/`bool`/`None`,
//! module `json`).

mod clock;
mod errors;
mod json;
mod record;

pub mod client;
pub mod server;

use pyo3::prelude::*;

/// The native module: the two machines and their event classes.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    client::register(m)?;
    server::register(m)?;
    Ok(())
}
