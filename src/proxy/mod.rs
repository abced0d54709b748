//! The deployer's side of the proxy: how a proxy comes to run on a host.
//!
//! The proxy itself, the data plane and its admin API, is the `cyan-proxy`
//! crate, re-exported here whole so `cyan::proxy::…` names it. That crate
//! knows nothing of the Docker engine, Kubernetes or `cyan`'s command line;
//! what does lives here:
//! - `boot`: the proxy as a container (`cyan proxy boot`), built and run
//!   through the Docker engine;
//! - `install`: the proxy as a systemd service (`cyan proxy install`);
//! - `autostart`: a deploy on a host with no proxy running starts one.

pub use cyan_proxy::*;

pub mod autostart;
pub mod boot;
pub mod install;

/// `--name=value` as one argument of a `cyan proxy run` cyan starts: a
/// value that starts with `-` is not taken for a flag, and a path goes
/// through as it is (not UTF-8 included).
pub fn flag_arg(name: &str, value: impl AsRef<std::ffi::OsStr>) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(format!("--{name}="));
    arg.push(value);
    arg
}
