//! `cyan watch`: what a deploy looks like from the outside, while it
//! happens.
//!
//! People watch a deploy with `while true; do curl -s URL; sleep 1; done`
//! and read the scrolling output for a version string and for errors. That
//! loop is made a tool here: it probes at a steady pace over a kept-alive
//! connection, as real clients do, and says at once which version answers,
//! when errors start and when they stop (an error window: how long, how
//! many probes failed, of which kinds), then sums up. A pipeline can run it
//! beside `cyan deploy` and fail on its exit code when a probe failed,
//! which is the lossless switch cyan promises, checked from outside.
//!
//! - `probe`: `cyan watch --url`: one URL; the probe loop, and the pure
//!   tracker of versions and error windows it feeds.
//! - `app`: `cyan watch -c`: one app's colors, traffic and steps, from
//!   this host's proxy.
//! - `traffic` and `events`: `cyan watch -c` and the dashboard read the
//!   proxy's route once per interval and turn each pair of reads into
//!   per-color rates (`traffic`) and deploy steps (`events`).

pub mod app;
pub mod events;
pub mod probe;
pub mod traffic;
