//! `cyan serve`: push webhooks in, deploys out.

pub mod forge;
pub mod rules;
