//! `cyan dashboard`: a web page of every app on the host, its traffic per
//! color as it happens, its history, and promote, abort and rollback
//! buttons.
//!
//! People watch a deploy: which version answers, whether the new color
//! errors, what ran when. `cyan status` answers once and Prometheus needs
//! a stack; this page is built in and works offline.
//!
//! - `access`: who may look and who may act (loopback, a token login, or
//!   a reverse proxy's header; CSRF on every action).
//! - `feed`: the proxy read once a second for everyone, pushed to each
//!   page as Server-Sent Events.
//! - `actions`: the buttons, run as the CLI's own commands.
//! - `server`: the HTTP side and the page (`assets/`, compiled in).
//!
//! What each app's overview holds is made by `cli::dashboard`, from the
//! same reports as `cyan status` and `cyan history`.

pub mod access;
pub mod actions;
pub mod feed;
pub mod server;
