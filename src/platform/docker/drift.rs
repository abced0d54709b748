//! Drift: where the live color's serving disagrees with its containers or
//! with cyan.yaml's route (`Observed::drift`, shown by `cyan status`), and
//! the repair that brings it back in line (`Step::Repair`).
//!
//! A replica's published port changes when it restarts, so the proxy can
//! be left sending a replica's requests to a port that is now another's.

use super::route::upstreams;
use super::spec::Managed;
use super::{short_id, DockerPlatform};
use crate::error::{Error, Result};
use crate::plan::Desired;
use crate::proxy::router::RouteView;
use crate::proxy::state::Upstream;
use crate::release::Color;

impl DockerPlatform<'_> {
    /// Where the live color's serving disagrees with its containers and
    /// with cyan.yaml's route (`Observed::drift`); nothing when not live.
    pub fn drift(
        &self,
        replicas: u32,
        containers: &[Managed],
        view: Option<&RouteView>,
    ) -> Vec<String> {
        let Some(v) = view.filter(|v| v.state.live.is_some()) else {
            return Vec::new();
        };
        let live = v.state.live.expect("filtered");
        let routed = v.state.colors.get(&live).map_or(&[][..], Vec::as_slice);
        let mut out = set_drift(live, replicas, containers, routed);
        if !self.route_spec().is_applied(&v.state) {
            out.push(format!(
                "the proxy routes {} differently from cyan.yaml's proxy settings",
                self.route()
            ));
        }
        out
    }

    /// Brings the live `color` back in line (`Step::Repair`): replicas
    /// that are missing are launched, stopped ones started, and those are
    /// gated; then the proxy gets every replica at its current address.
    /// Says what it repaired, and fails if drift is left (a replica that
    /// keeps crashing).
    pub(super) async fn repair(&self, color: Color, d: &Desired) -> Result<()> {
        let before = self.containers().await?;
        let view = self.route_view().await?;
        for line in self.drift(d.replicas, &before, view.as_ref()) {
            self.out.detail(format!("repairing: {line}"));
        }
        self.launch(color, d).await?;
        let stopped = self
            .color_set(color)
            .await?
            .into_iter()
            .filter(|m| matches!(m.state.as_str(), "exited" | "dead" | "created"));
        for m in stopped {
            match self.docker.start_container(&m.id, None).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let set = self.color_set(color).await?;
        let was_running = |m: &Managed| before.iter().any(|b| b.id == m.id && b.state == "running");
        let fresh: Vec<Managed> = set.iter().filter(|m| !was_running(m)).cloned().collect();
        if !fresh.is_empty() {
            self.gate_replicas(color, &fresh).await?;
        }
        self.proxy
            .set_color(&self.route(), color, upstreams(&set)?)
            .await?;
        if view.is_some_and(|v| !self.route_spec().is_applied(&v.state)) {
            self.proxy
                .put_route(&self.route(), &self.route_spec())
                .await?;
        }
        let after = self.containers().await?;
        let left = self.drift(d.replicas, &after, self.route_view().await?.as_ref());
        if !left.is_empty() {
            return Err(Error::Platform(format!(
                "live {color} could not be repaired: {}. See `cyan status` and `docker logs`",
                left.join("; ")
            )));
        }
        self.out.detail(format!(
            "repaired: {} {color} replica(s) running and routed at their current addresses",
            set.len()
        ));
        Ok(())
    }
}

/// Where `color`'s serving disagrees with its containers, one line each:
/// every replica should exist, run, and be one of the proxy's `upstreams`
/// (the color's) at the address it has now, and every upstream should
/// name one of them.
fn set_drift(
    color: Color,
    replicas: u32,
    containers: &[Managed],
    upstreams: &[Upstream],
) -> Vec<String> {
    let set: Vec<&Managed> = containers.iter().filter(|m| m.color == color).collect();
    let mut out = Vec::new();
    if (set.len() as u32) < replicas {
        out.push(format!(
            "{} of {replicas} {color} replica(s) missing",
            replicas - set.len() as u32
        ));
    }
    for m in &set {
        if m.state != "running" {
            out.push(format!("{} is {}", m.name, m.state));
            continue;
        }
        let routed = upstreams
            .iter()
            .find(|u| u.container.as_deref() == Some(m.id.as_str()));
        match (routed, m.addr) {
            (None, _) => out.push(format!("{} is not one of the proxy's upstreams", m.name)),
            (Some(u), Some(addr)) if u.addr != addr => out.push(format!(
                "the proxy sends {}'s requests to {}, but its port is now {addr}",
                m.name, u.addr
            )),
            (Some(u), _) if !u.up() => out.push(format!(
                "the proxy has {} out of rotation ({})",
                m.name,
                u.down.as_deref().unwrap_or_default()
            )),
            _ => {}
        }
    }
    for u in upstreams {
        match &u.container {
            None => out.push(format!(
                "upstream {} names no container (registered by an older cyan)",
                u.addr
            )),
            Some(id) if !set.iter().any(|m| &m.id == id) => out.push(format!(
                "upstream {} names container {}, which is gone",
                u.addr,
                short_id(id)
            )),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Release;

    fn replica(replica: u32, state: &str, port: Option<u16>) -> Managed {
        Managed {
            id: format!("c{replica}"),
            name: format!("web-production-blue-1-{replica}"),
            color: Color::Blue,
            release: Release {
                version: "v1".into(),
                revision: 1,
                image_id: "sha256:abc".into(),
                digest: None,
                config_hash: "h".into(),
            },
            replica,
            state: state.into(),
            addr: port.map(|p| ([127, 0, 0, 1], p).into()),
        }
    }

    fn routed(id: &str, port: u16) -> Upstream {
        Upstream::of_container(([127, 0, 0, 1], port).into(), id)
    }

    #[test]
    fn a_set_served_as_it_runs_has_no_drift() {
        let set = [
            replica(0, "running", Some(1000)),
            replica(1, "running", Some(1001)),
        ];
        let upstreams = [routed("c0", 1000), routed("c1", 1001)];
        assert!(set_drift(Color::Blue, 2, &set, &upstreams).is_empty());
        let mut green = replica(0, "exited", None);
        green.color = Color::Green;
        let with_green = [set[0].clone(), set[1].clone(), green];
        assert!(
            set_drift(Color::Blue, 2, &with_green, &upstreams).is_empty(),
            "only the color's own containers count"
        );
    }

    #[test]
    fn each_disagreement_is_one_line() {
        let set = [
            replica(0, "running", Some(1000)),
            replica(1, "exited", None),
            replica(2, "running", Some(2002)),
            replica(3, "running", Some(1003)),
        ];
        let mut down = routed("c3", 1003);
        down.down = Some("exited".into());
        let mut anonymous = routed("", 1004);
        anonymous.container = None;
        let upstreams = [
            routed("c2", 1002),
            down,
            anonymous,
            routed("0123456789abcdef", 1005),
        ];
        assert_eq!(
            set_drift(Color::Blue, 5, &set, &upstreams),
            [
                "1 of 5 blue replica(s) missing",
                "web-production-blue-1-0 is not one of the proxy's upstreams",
                "web-production-blue-1-1 is exited",
                "the proxy sends web-production-blue-1-2's requests to 127.0.0.1:1002, but its port is now 127.0.0.1:2002",
                "the proxy has web-production-blue-1-3 out of rotation (exited)",
                "upstream 127.0.0.1:1004 names no container (registered by an older cyan)",
                "upstream 127.0.0.1:1005 names container 0123456789ab, which is gone",
            ]
        );
    }
}
