//! `cyan remove`: an app leaves this host. Its route goes first (so no
//! request reaches a container being stopped), then its containers of both
//! colors; its record and history go with the route. Images are kept: they
//! are the rollback targets of other environments and cost only disk.

use serde::Serialize;

use super::session::{self, At};
use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::lock::DeployLock;
use crate::output::Output;
use crate::platform::docker::{DockerPlatform, Managed};
use crate::release::Color;

#[derive(Serialize)]
struct Removed {
    app: String,
    environment: String,
    /// The proxy route that was removed (`app-environment`), if there was one.
    route: Option<String>,
    /// Hosts and listen address it answered on.
    hosts: Vec<String>,
    listen: Option<String>,
    /// Names of the containers stopped and removed.
    containers: Vec<String>,
    /// History entries dropped with the record.
    history: usize,
}

/// Removes the app of `cfg` from this host; without `yes`, only says what
/// that would remove (`Error::Config`, exit 2). Refused (`Error::LockHeld`)
/// while a deploy holds the app's lock, after waiting up to `wait`.
pub async fn remove(
    at: At<'_>,
    cfg: &Loaded,
    yes: bool,
    wait: std::time::Duration,
    out: &Output,
) -> Result<()> {
    let p = session::open_to_read(at, cfg, out).await?;
    let c = &cfg.config;
    let route = c.route();
    let (found, _) = survey(&p, cfg).await?;
    if !yes {
        return Err(Error::Config(format!(
            "cyan remove would remove {}. Traffic to it stops at once. Run it again with --yes to do it",
            describe(&found)
        )));
    }
    let lock = DeployLock::acquire(&p.proxy, &route, "remove", wait, out).await?;
    lock.stop_renewing();
    // Looked at again under the lock: a deploy that held it until now may
    // have launched a color.
    let (removed, containers) = match survey(&p, cfg).await {
        Ok(found) => found,
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    };
    let summary = describe(&removed);
    let outcome = async {
        if removed.route.is_some() {
            out.phase(format!("remove route {route}"));
            p.proxy.remove_route(&route, Some(&lock.token)).await?;
            out.done(format!("removed route {route}"));
        }
        for color in Color::ALL {
            if containers.iter().any(|m| m.color == color) {
                out.phase(format!("remove {color} containers"));
                p.clear(color).await?;
                out.done(format!("removed {color} containers"));
            }
        }
        // A hook's one-off container that a killed cyan left running.
        for left in crate::hooks::leftovers(&p.docker, &route).await? {
            out.phase(format!("remove hook container {left}"));
            crate::hooks::remove(&p.docker, &left).await;
            out.done(format!("removed hook container {left}"));
        }
        Ok::<_, Error>(())
    }
    .await;
    if removed.route.is_none() || outcome.is_err() {
        lock.release().await;
    }
    outcome?;
    out.result(&removed, || {
        format!(
            "removed {summary}; its images are kept (docker images {})",
            c.image.as_str()
        )
    });
    Ok(())
}

/// What there is of the app on this host now: its route, in words, and
/// its containers. Nothing at all is `Error::Refused`.
async fn survey(p: &DockerPlatform<'_>, cfg: &Loaded) -> Result<(Removed, Vec<Managed>)> {
    let c = &cfg.config;
    let view = p.route_view().await?;
    let containers = p.containers().await?;
    if view.is_none() && containers.is_empty() {
        return Err(Error::Refused(format!(
            "{} has no route and no containers on this host: there is nothing to remove",
            c.route()
        )));
    }
    let removed = Removed {
        app: c.app.to_string(),
        environment: c.environment.to_string(),
        route: view.as_ref().map(|v| v.name.clone()),
        hosts: view.as_ref().map_or(Vec::new(), |v| v.state.hosts.clone()),
        listen: view
            .as_ref()
            .and_then(|v| v.state.listen)
            .map(|a| a.to_string()),
        containers: containers.iter().map(|m| m.name.clone()).collect(),
        history: view.as_ref().map_or(0, |v| {
            crate::platform::docker::parse_record(&v.state.record)
                .history
                .len()
        }),
    };
    Ok((removed, containers))
}

/// What `remove` takes away, in words.
fn describe(r: &Removed) -> String {
    let mut answers: Vec<String> = r.hosts.clone();
    answers.extend(r.listen.clone());
    let route = match &r.route {
        Some(name) if answers.is_empty() => format!("route {name}"),
        Some(name) => format!("route {name} ({})", answers.join(", ")),
        None => "no route".into(),
    };
    format!(
        "{} ({}): {route}, {} container(s){}, and a history of {} entries",
        r.app,
        r.environment,
        r.containers.len(),
        match r.containers.as_slice() {
            [] => String::new(),
            names => format!(" [{}]", names.join(", ")),
        },
        r.history
    )
}
