//! The cyan proxy: the atomic traffic switch on Docker hosts.
//!
//! One proxy per host serves every app on it, routed by Host header and/or
//! listen address. It is a crate of its own, like kamal-proxy is a program
//! of its own: it depends on nothing of the deployer (no Docker engine, no
//! Kubernetes, no command line), only on the planner's vocabulary
//! (`cyan_plan::release::Color`). What it needs from its host comes in as
//! values: `RunOptions` (with the arguments that start a successor) and a
//! `Follow` that keeps container upstreams current. Its parts, one concept
//! each:
//! - `router`: the ArcSwap'd table and the primitives that change it;
//!   `control`: the control plane's named verbs (put route, set color,
//!   switch, hold, ...), each with its rule; `lease`: the deploy lock;
//! - the request path, the same for the fast path and hyper's: `forward`:
//!   a listener's `Forwarder` and each connection's `ClientConn`, the claim
//!   that routes a request, and hyper's path; `load_balancer`: one color of
//!   a route, picking the upstream a request claims (round-robin or least
//!   connections); `upstream`: one upstream, its claims (in-flight
//!   counting, which a drain waits on) and passive health; `conn_pool`:
//!   keep-alive connections to one upstream; `stats`: per-color counters;
//!   `attempt`: a request's tries at an upstream, and who is to blame for
//!   a failure (client or upstream); `pages`: cyan's own answers (404,
//!   maintenance, 503s, 502/504, refused requests);
//! - headers on the way: `headers`: authority, hop-by-hop, framing and
//!   upgrade rules; `forwarding`: `X-Forwarded-*` and their kin, believed
//!   only from a route's trusted proxies; `request_id`: `X-Request-Id`;
//! - `fast`, `heads`, `framing`, `prefixed`: the HTTP/1.1 fast path;
//!   `differential`: the fuzz target that holds it to hyper's path;
//!   `fuzz`: the invariants of cyan's own parsing, on arbitrary input;
//! - `timeouts`: deadlines on every read from a client; `client_body`: a
//!   request body on hyper's path, read under its deadline;
//!   `response_body`: a response body on hyper's path, holding its claim
//!   until its last byte;
//! - `admin`: the admin API, a table from (method, path) to a verb; `api`:
//!   its bodies; `client`: its client (and how a proxy process is started
//!   detached); `admin_listen`: its Unix socket and optional token-guarded
//!   loopback TCP listener;
//! - `tls`: TLS termination, a certificate picked by SNI from the table;
//!   `certs`: each TLS route's last good certificate, kept in the home and
//!   renewed in place;
//! - `acme`: certificates obtained and renewed from an ACME CA (Let's
//!   Encrypt) for routes with `tls: acme`, and the challenges' answers;
//! - `state`: routes as the proxy keeps them; `journal`: how they are kept
//!   on disk (a snapshot and an append-only journal of changed routes),
//!   restored before listening;
//! - `tunnel`: upgraded connections (WebSocket); `drain`: how long-lived
//!   connections and streamed responses on an old color end, spread;
//! - `server`: a running proxy, its start (`run`), listeners and accept
//!   loops (`server::listen`) and its drain; `home`: its folder and the
//!   lock that makes it the folder's only proxy;
//! - `handoff`: `cyan proxy upgrade`, a new process taking over the sockets;
//! - `metrics`: Prometheus `/metrics` on a loopback port;
//! - `active`: optional active health checks of live upstreams;
//! - `workers`: thread-per-core serving runtimes;
//! - `clock`: wall-clock time and this host's identity (the deployer uses
//!   it too); `error`: the proxy's errors, grouped as the deployer's are.

pub mod acme;
pub mod active;
pub mod admin;
pub mod admin_listen;
pub mod api;
pub mod attempt;
pub mod certs;
pub mod client;
pub mod client_body;
pub mod clock;
pub mod conn_pool;
pub mod control;
pub mod differential;
pub mod drain;
mod error;
pub mod fast;
pub mod forward;
pub mod forwarding;
pub mod framing;
pub mod fuzz;
pub mod handoff;
pub mod headers;
pub mod heads;
mod home;
pub mod journal;
pub mod lease;
pub mod load_balancer;
pub mod metrics;
pub mod pages;
pub mod prefixed;
pub mod request_id;
pub mod response_body;
pub mod router;
mod server;
pub mod state;
pub mod stats;
pub mod timeouts;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use error::{Error, Result};
pub use home::Home;
use router::Router;
pub use server::{run, Proxy};

/// How the proxy runs: what `cyan proxy run`'s flags say.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Listen addresses beyond those the routes ask for.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses for host-routed apps (certificates by SNI).
    pub tls_listen: Vec<SocketAddr>,
    /// How long open connections get at shutdown.
    pub drain: Duration,
    /// Where to serve Prometheus `/metrics` (loopback only).
    pub metrics: Option<SocketAddr>,
    /// The admin API on loopback TCP too, with a bearer token.
    pub admin_tcp: Option<admin_listen::TcpAdmin>,
    /// Serving threads (default: one per core).
    pub threads: Option<usize>,
    /// Deadlines on reads from clients.
    pub timeouts: timeouts::Timeouts,
    /// How often TLS files are checked for a renewal.
    pub cert_check: Duration,
    /// The ACME CA and account for routes with `tls: acme`.
    pub acme: acme::AcmeOptions,
    /// The arguments (after the program) that start a successor with these
    /// options, for `cyan proxy upgrade` (`handoff`): whoever parsed the
    /// flags writes them back, so the proxy never learns its command line.
    pub successor_args: Vec<std::ffi::OsString>,
}

/// What keeps upstreams that name containers on their containers' current
/// addresses (the deployer's `platform::follow`; the proxy knows no
/// engine). It is given the restored router before any listener accepts,
/// and the proxy waits for its future, which ends once the routes have been
/// checked (or could not be); what follows runs in its own tasks until the
/// receiver sees the stop.
pub type Follow = Box<
    dyn FnOnce(
            Arc<Router>,
            watch::Receiver<bool>,
        ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;
