//! Platforms observe and act; they hold no policy (that is `plan`).
//!
//! The engine drives any `Platform` with observe → plan → act. Docker is the
//! first; Kubernetes will implement the same trait over Deployments and
//! Services.

pub mod docker;
pub mod follow;
pub mod kube;

use std::future::Future;

use crate::error::Result;
use crate::plan::{Desired, Observed, Step};

pub trait Platform {
    /// Reads everything the planner needs, from the platform only.
    fn observe(&self, desired: &Desired) -> impl Future<Output = Result<Observed>>;
    /// Carries out one step. Every step is idempotent: running it twice, or
    /// after a crash half-way, leads to the same state.
    fn act(&self, step: &Step, desired: &Desired) -> impl Future<Output = Result<()>>;
}
