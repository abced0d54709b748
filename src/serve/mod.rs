//! `cyan serve`: push webhooks in, deploys out.
//!
//! - `forge`: which forge sent a delivery, its signature, what it says.
//! - `rules`: cyan.yaml's `serve:`, and what a delivery deploys.
//! - `server`: the HTTP listener, its bounds and answers.
//! - `queue`: one deploy per environment at a time, run as `cyan deploy`.
//! - `fetch`: the pushed commit from `serve.source` onto disk.
//! - `deliveries`: the log of what came in and what became of it.

pub mod deliveries;
pub mod fetch;
pub mod forge;
pub mod queue;
pub mod rules;
pub mod server;
