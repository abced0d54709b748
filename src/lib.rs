//! cyan: a container-native blue/green deployer.
//!
//! The crate is a library with a thin binary (`main.rs`). The planner
//! (`plan`) holds all deploy policy; platforms (`platform`) observe and act;
//! the engine (`engine`) runs observe → plan → act; the proxy (`proxy`) is the
//! atomic traffic switch on Docker hosts.

pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod github;
pub mod health;
pub mod image;
pub mod lock;
pub mod operator;
pub mod output;
pub mod plan;
pub mod platform;
pub mod proxy;
pub mod record;
pub mod release;
