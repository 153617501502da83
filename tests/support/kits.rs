//! One scenario suite, many runtimes: a `Kit` starts servers and clients on its runtime and
//! runs the test's main future there. Fixtures (the fault proxy, raw sockets, mute listeners)
//! live on their own tokio runtime: they are the environment, not the system under test.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;

use futures::FutureExt;
use tether_core::client::ClientConfig;
use tether_core::server::{ServerConfig, ServerSnapshot};
use tether_driver::{BoxFuture, Client, ClientEvents, ConnectOptions, Server, ServerEvents};
use tether_tokio::ServerOptions;
use tether_tokio::TokioRuntime;

/// A running server started by a kit.
pub struct Gateway {
    pub server: Server,
    pub events: ServerEvents,
    pub addr: SocketAddr,
    pub accepting: BoxFuture<()>,
    pub kit: &'static dyn Kit,
}

/// The options of a client with `token`.
fn connect_options(token: Option<&str>) -> ConnectOptions {
    let mut options = ConnectOptions::default();
    options.token = token.map(str::to_owned);
    options
}

/// Starts servers and clients on one runtime.
pub trait Kit: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn block_on(&self, future: BoxFuture<()>);
    fn serve(
        &'static self,
        addr: String,
        config: ServerConfig,
        snapshot: Option<ServerSnapshot>,
    ) -> BoxFuture<Gateway>;
    fn connect(
        &self,
        url: &str,
        token: Option<&str>,
        config: ClientConfig,
    ) -> (Client, ClientEvents);
}

/// The runtime of fixtures and helper tasks (publishers, raw clients, the proxy).
pub fn fixtures() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Runs `future` as a helper task; the handle can be awaited from any runtime.
pub fn background<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> BoxFuture<T> {
    let handle = fixtures().spawn(future);
    Box::pin(handle.map(|r| r.expect("helper task panicked")))
}

pub struct Tokio;
pub static TOKIO: Tokio = Tokio;

fn tokio_rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

impl Kit for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }
    fn block_on(&self, future: BoxFuture<()>) {
        // The test's own future runs as a task so that it never blocks a worker it shares.
        let handle = tokio_rt().spawn(future);
        futures::executor::block_on(handle).expect("test task panicked");
    }
    fn serve(
        &'static self,
        addr: String,
        config: ServerConfig,
        snapshot: Option<ServerSnapshot>,
    ) -> BoxFuture<Gateway> {
        let handle = tokio_rt().spawn(async move {
            tether_tokio::serve(
                TokioRuntime,
                &addr,
                config,
                ServerOptions::default().snapshot(snapshot),
            )
            .await
            .expect("serve")
        });
        Box::pin(async move {
            let bound = handle.await.expect("serve task");
            Gateway {
                server: bound.server,
                events: bound.events,
                addr: bound.local_addr,
                accepting: Box::pin(bound.accepting.map(|_| ())),
                kit: &TOKIO,
            }
        })
    }
    fn connect(
        &self,
        url: &str,
        token: Option<&str>,
        config: ClientConfig,
    ) -> (Client, ClientEvents) {
        let _guard = tokio_rt().enter();
        tether_tokio::connect(TokioRuntime, url, config, connect_options(token)).expect("connect")
    }
}

pub struct AsyncStd;
pub static ASYNC_STD: AsyncStd = AsyncStd;

impl Kit for AsyncStd {
    fn name(&self) -> &'static str {
        "async-std"
    }
    fn block_on(&self, future: BoxFuture<()>) {
        async_std::task::block_on(future)
    }
    fn serve(
        &'static self,
        addr: String,
        config: ServerConfig,
        snapshot: Option<ServerSnapshot>,
    ) -> BoxFuture<Gateway> {
        Box::pin(async move {
            let bound = tether_async_std::serve(
                tether_async_std::AsyncStdRuntime,
                &addr,
                config,
                ServerOptions::default().snapshot(snapshot),
            )
            .await
            .expect("serve");
            Gateway {
                server: bound.server,
                events: bound.events,
                addr: bound.local_addr,
                accepting: bound.accepting,
                kit: &ASYNC_STD,
            }
        })
    }
    fn connect(
        &self,
        url: &str,
        token: Option<&str>,
        config: ClientConfig,
    ) -> (Client, ClientEvents) {
        tether_async_std::connect(
            tether_async_std::AsyncStdRuntime,
            url,
            config,
            connect_options(token),
        )
        .expect("connect")
    }
}

pub struct Smol;
pub static SMOL: Smol = Smol;

impl Kit for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }
    fn block_on(&self, future: BoxFuture<()>) {
        smol::block_on(future)
    }
    fn serve(
        &'static self,
        addr: String,
        config: ServerConfig,
        snapshot: Option<ServerSnapshot>,
    ) -> BoxFuture<Gateway> {
        Box::pin(async move {
            let bound = tether_async_std::serve(
                tether_async_std::SmolRuntime,
                &addr,
                config,
                ServerOptions::default().snapshot(snapshot),
            )
            .await
            .expect("serve");
            Gateway {
                server: bound.server,
                events: bound.events,
                addr: bound.local_addr,
                accepting: bound.accepting,
                kit: &SMOL,
            }
        })
    }
    fn connect(
        &self,
        url: &str,
        token: Option<&str>,
        config: ClientConfig,
    ) -> (Client, ClientEvents) {
        tether_async_std::connect(
            tether_async_std::SmolRuntime,
            url,
            config,
            connect_options(token),
        )
        .expect("connect")
    }
}
