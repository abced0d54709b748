//! Several Docker hosts, each with its own cyan proxy behind the user's
//! load balancer, moved as one: `ssh` (one OpenSSH connection per host,
//! carrying its engine, its proxy and the gate's probes), `host` (a host
//! connected, its proxy booted when none runs), `ship` (the one image
//! built here, on every host by its image id).
//!
//! What a fleet deploy does with them (prepare every host, switch all at
//! once, verify over the sum, back out together) is the CLI's
//! (`cli::fleet`), beside the one-host commands it reuses per host.

mod host;
mod ship;
mod ssh;

pub use host::Host;
pub use ship::{local_image, ship};
pub use ssh::Tunnel;
