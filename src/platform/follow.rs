//! Routing follows the engine: the proxy's upstreams are kept on the
//! addresses their containers have now.
//!
//! A replica is published on an ephemeral host port, and a published port
//! belongs to a container only while it runs. A crash that its restart
//! policy restarts, `docker restart`, a daemon restart or a reboot each
//! give it another port, and the freed one can be taken by another app's
//! container. So every upstream the deployer registers names its container
//! (`proxy::state::Upstream`), and this follower, run inside the proxy
//! process, keeps the two in line:
//!
//! - before the proxy accepts (`follow`), every route is checked against
//!   the engine's list; a container that is not running, or an engine
//!   that cannot be reached, takes the address out of rotation (a 503
//!   beats another app's answer);
//! - then it follows the engine's container events: one that stops, dies,
//!   pauses or is removed leaves rotation at once; one that starts is put
//!   back at its new port once that port takes connections
//!   (`admit_when_ready`);
//! - when the event stream breaks, it reconnects (with backoff) and checks
//!   everything again. If the engine itself is down and does not keep its
//!   containers running (no `live-restore`), their addresses are taken out
//!   of rotation until it is back.
//!
//! The proxy knows no engine: it takes this as a `proxy::Follow`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::docker::{connect, label};
use crate::proxy::router::{Router, Seen};

/// How long the proxy waits for the engine before it accepts anyway (with
/// the routes that name containers out of rotation).
const FIRST_PASS: Duration = Duration::from_secs(5);

/// How long a started container may take to take connections before it
/// is left out of rotation.
const STARTING: Duration = Duration::from_secs(120);

/// What an event says of its container. The engine's container list can
/// lag its events (after `die` it may still say running, after `unpause`
/// paused), so an event that takes a container down is taken as the state
/// itself, and one that brings it up is checked with an inspect, which
/// reads the container under its own lock. (`kill` is not here: a signal
/// need not stop the container; its `die` follows if it does.)
fn what(action: &str) -> Option<Event> {
    Some(match action {
        "die" | "stop" => Event::Down("exited"),
        "pause" => Event::Down("paused"),
        "destroy" => Event::Down("removed"),
        "start" | "restart" | "unpause" => Event::Up,
        _ => return None,
    })
}

enum Event {
    Down(&'static str),
    Up,
}

/// Checks every route against the engine (or, if it cannot be reached in
/// `FIRST_PASS`, takes container upstreams out of rotation), then follows
/// the engine in a task of its own until `stop` changes.
pub async fn follow(router: Arc<Router>, stop: watch::Receiver<bool>) {
    let first = tokio::time::timeout(FIRST_PASS, async {
        let docker = connect().await.map_err(|e| e.to_string())?;
        check_all(&docker, &router).await
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer in {FIRST_PASS:?}")));
    if let Err(e) = first {
        tracing::warn!(error = %e, "cannot reach the Docker engine; upstreams in containers are out of rotation until it answers");
        engine_down(&router);
    }
    tokio::spawn(follow_events(router, stop));
}

/// Reconnects and follows the engine's container events until `stop`.
async fn follow_events(router: Arc<Router>, mut stop: watch::Receiver<bool>) {
    let mut backoff = retry_delays();
    // As the engine said when last reached: with live-restore, its
    // containers keep running (and keep their ports) while it is down.
    let mut live_restore = false;
    // Said once when the engine is lost, and once when it is back, rather
    // than on every attempt in between.
    let mut lost = false;
    loop {
        let run = async {
            let docker = connect().await.map_err(|e| e.to_string())?;
            live_restore = docker
                .info()
                .await
                .ok()
                .and_then(|i| i.live_restore_enabled)
                .unwrap_or(false);
            // Events from a moment before the list are replayed, so none
            // between the list and the subscription is missed.
            let since = (crate::clock::now_ms() / 1000)
                .saturating_sub(1)
                .to_string();
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{}=true", label::MANAGED)],
                ),
            ]);
            let opts = EventsOptionsBuilder::default()
                .since(&since)
                .filters(&filters)
                .build();
            let mut events = docker.events(Some(opts));
            check_all(&docker, &router).await?;
            backoff = retry_delays();
            if std::mem::take(&mut lost) {
                tracing::info!("following the Docker engine again");
            }
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| e.to_string())?;
                let action = event.action.unwrap_or_default();
                let id = event.actor.and_then(|a| a.id).unwrap_or_default();
                if let (false, Some(what)) = (id.is_empty(), what(&action)) {
                    check_one(&docker, &router, &id, what).await?;
                }
            }
            Err::<std::convert::Infallible, String>("the event stream ended".to_string())
        };
        let wait = tokio::select! {
            _ = stop.changed() => return,
            outcome = run => {
                let Err(e) = outcome;
                // However it was lost (the stream broke, a check or a
                // reconnect failed: a stopping engine closes its API
                // before it stops the containers), an engine that is gone
                // took its containers' ports with it.
                if !live_restore && !reachable().await {
                    engine_down(&router);
                }
                if std::mem::replace(&mut lost, true) {
                    tracing::debug!(error = %e, "still no Docker engine; retrying");
                } else {
                    tracing::warn!(error = %e, "lost the Docker engine's events; reconnecting");
                }
                backoff.next().unwrap_or(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Does the engine answer a ping (in `FIRST_PASS`)?
async fn reachable() -> bool {
    let ping = async { connect().await.ok()?.ping().await.ok() };
    matches!(tokio::time::timeout(FIRST_PASS, ping).await, Ok(Some(_)))
}

/// 100 ms, doubling to 1 s, then 1 s for ever: a connect to a local
/// socket is cheap, and an engine back from a restart is followed soon.
fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .without_max_times()
        .build()
}

/// Every upstream in a container, checked against the engine's list.
async fn check_all(docker: &Docker, router: &Router) -> Result<(), String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{}=true", label::MANAGED)],
    )]);
    let seen = list(docker, filters).await?;
    apply(router, &seen, true)
}

/// One container, after an event about it. A container that is running
/// on an address it is not routed at yet has just started: it stays out of
/// rotation until its port takes connections (`admit_when_ready`), so the
/// proxy does not send requests to an app that has not bound yet (they
/// would be reset, and the upstream ejected for its cool-off).
async fn check_one(
    docker: &Docker,
    router: &Arc<Router>,
    id: &str,
    event: Event,
) -> Result<(), String> {
    if !router.names(id) {
        return Ok(());
    }
    let now = match event {
        Event::Down(why) => Seen::Down(why.into()),
        Event::Up => match inspect(docker, id).await? {
            Seen::At(addr) if !router.in_rotation(id, addr) => {
                tokio::spawn(admit_when_ready(
                    docker.clone(),
                    router.clone(),
                    id.to_string(),
                    addr,
                ));
                Seen::Down("starting".into())
            }
            now => now,
        },
    };
    apply(router, &HashMap::from([(id.to_string(), now)]), false)
}

/// Puts a started container in rotation once its port takes connections
/// and the engine still has it there; gives up after `STARTING` (its next
/// event, or a deploy's repair, puts it back then).
async fn admit_when_ready(docker: Docker, router: Arc<Router>, id: String, addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + STARTING;
    while !accepting(addr).await {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(container = %id, %addr, "a started container did not take connections in time; left out of rotation");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = match inspect(&docker, &id).await {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "cannot check a started container");
            return;
        }
    };
    // Only the address it was started on: a newer start has its own task.
    if now == Seen::At(addr) {
        if let Err(e) = apply(&router, &HashMap::from([(id, now)]), false) {
            tracing::warn!(error = %e, "cannot put a started container in rotation");
        }
    }
}

/// Does something take connections on `addr`? Docker's userland proxy
/// accepts on the published port even while nothing listens in the
/// container, and then closes the connection; so a connection must also
/// stay open (or be spoken to) for a moment: the `health.tcp` probe.
async fn accepting(addr: SocketAddr) -> bool {
    crate::health::tcp_connect(addr, Duration::from_millis(500))
        .await
        .is_ok()
}

fn apply(router: &Router, seen: &HashMap<String, Seen>, whole: bool) -> Result<(), String> {
    let changed = router.retarget(seen, whole).map_err(|e| format!("{e:?}"))?;
    for change in changed {
        tracing::info!(%change, "upstream follows its container");
    }
    Ok(())
}

/// The engine is gone, and its containers with it.
fn engine_down(router: &Router) {
    let down = Seen::Down("engine unreachable".into());
    let seen = router
        .containers()
        .into_iter()
        .map(|id| (id, down.clone()))
        .collect();
    if let Err(e) = apply(router, &seen, false) {
        tracing::warn!(error = %e, "cannot take upstreams out of rotation");
    }
}

async fn list(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
) -> Result<HashMap<String, Seen>, String> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .into_iter()
        .filter_map(|s| Some((s.id.clone()?, seen(&s))))
        .collect())
}

/// What a listed container is now, to the proxy.
fn seen(s: &ContainerSummary) -> Seen {
    let state = s.state.unwrap_or(ContainerSummaryStateEnum::EMPTY);
    if state != ContainerSummaryStateEnum::RUNNING {
        return Seen::Down(state.to_string());
    }
    let bindings = s.ports.iter().flatten().map(|p| Binding {
        private: p.private_port,
        ip: p.ip.as_deref(),
        public: p.public_port,
    });
    match published(private_port(s.labels.as_ref()), bindings) {
        Some(addr) => Seen::At(addr),
        None => Seen::Down("no published port".into()),
    }
}

/// What one container is now, read under its own lock in the engine.
async fn inspect(docker: &Docker, id: &str) -> Result<Seen, String> {
    let info = match docker.inspect_container(id, None).await {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(Seen::Down("removed".into())),
        Err(e) => return Err(e.to_string()),
    };
    let state = info.state.unwrap_or_default();
    let down = match (state.running, state.paused, state.restarting) {
        (_, Some(true), _) => Some("paused".to_string()),
        (_, _, Some(true)) => Some("restarting".to_string()),
        (Some(true), _, _) => None,
        _ => Some(state.status.map_or("exited".into(), |s| s.to_string())),
    };
    if let Some(why) = down {
        return Ok(Seen::Down(why));
    }
    let labels = info.config.and_then(|c| c.labels);
    let ports = info
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    let bindings = ports.iter().flat_map(|(key, bound)| {
        let private = key.split('/').next().and_then(|p| p.parse().ok());
        bound.iter().flatten().filter_map(move |b| {
            Some(Binding {
                private: private?,
                ip: b.host_ip.as_deref(),
                public: b.host_port.as_deref()?.parse().ok(),
            })
        })
    });
    Ok(match published(private_port(labels.as_ref()), bindings) {
        Some(addr) => Seen::At(addr),
        None => Seen::Down("no published port".into()),
    })
}

/// One published port of a container, as the engine lists or inspects it.
struct Binding<'a> {
    private: u16,
    ip: Option<&'a str>,
    public: Option<u16>,
}

/// The container port named by the `cyan.port` label, if it has one.
fn private_port(labels: Option<&HashMap<String, String>>) -> Option<u16> {
    labels?.get(label::PORT)?.parse().ok()
}

/// The port published on 127.0.0.1: from `private` when known, else the
/// only one (several and no label: none, rather than a guess).
fn published<'a>(
    private: Option<u16>,
    bindings: impl Iterator<Item = Binding<'a>>,
) -> Option<SocketAddr> {
    let mut found = bindings.filter_map(|b| {
        let port = b.public?;
        (b.ip == Some("127.0.0.1") && private.is_none_or(|p| p == b.private))
            .then(|| SocketAddr::new([127, 0, 0, 1].into(), port))
    });
    let first = found.next()?;
    match (private, found.next()) {
        (None, Some(_)) => None,
        _ => Some(first),
    }
}
