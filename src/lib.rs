//! cyan: a container-native blue/green deployer.
//!
//! The deployer: the CLI, the platforms, the operator and the Action's
//! support, as a library with a thin binary (`main.rs`). Two crates sit
//! below it, and the compiler keeps the arrows one way:
//! - `cyan-plan` (`plan`, with `record` and the release vocabulary): all
//!   deploy policy, pure, no I/O;
//! - `cyan-proxy` (`proxy`): the atomic traffic switch on Docker hosts, the
//!   data plane and its admin API, with nothing of the deployer in it.
//!
//! Here, platforms (`platform`) observe and act; the engine (`engine`) runs
//! observe → plan → act; `proxy` adds how a proxy comes to run on a host.

pub mod cli;
pub use cyan_proxy::clock;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod health;
pub mod hooks;
pub mod image;
pub mod lock;
pub mod notify;
pub mod operator;
pub mod output;
pub use cyan_plan as plan;
pub mod platform;
pub mod proxy;
pub use cyan_plan::record;
pub mod release;
pub mod serve;
pub mod watch;
