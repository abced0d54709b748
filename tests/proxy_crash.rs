//! A `kill -9` of the proxy, at any moment while route changes stream in,
//! loses no change the admin API acknowledged: a deployer that heard "done"
//! for a switch, a record or a lease acts on it (it tells its user, it goes
//! on to the next host), so that change must be there after any crash.
//!
//! The real `cyan proxy run` process, with writers streaming every kind of
//! change over its admin socket, each writer owning its own routes and
//! keeping what was last acknowledged for each. The proxy is killed at a
//! random moment, or right as its journal compacts, and restarted on the
//! same home; every route must then be as last acknowledged (the one change
//! per writer in flight at the kill may be either way), and served so.
//!
//! The journal is the file in the home whose name ends in `.journal`
//! (`proxy.journal`): it has compacted when it gets smaller, and a torn
//! last record is bytes appended to it (the sealed part is not torn:
//! garbage there comes before the live journal, and a proxy rightly refuses
//! it).
//!
//! A kill loses what the process had not written; what it wrote but had
//! not fsynced is still in the page cache, so this catches a change
//! acknowledged before it was written, not one acknowledged before it was
//! fsynced (that takes a power cut).
//!
//! `CYAN_CRASH_SEED=<n>` replays a run's choices (each test prints its
//! seed); timing still differs.

mod util;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cyan::proxy::api::{LockRequest, SwitchRequest};
use cyan::proxy::client::AdminClient;
use cyan::proxy::state::{Maintenance, RouteState, Upstream};
use cyan::release::Color;
use serde_json::{json, Value};
use util::proxy::{body, get, host_route, spawn_proxy, TestProxy};
use util::upstream::{answering, fixed};
use util::wait;

const WRITERS: usize = 4;
/// Per writer: routes made live before the first kill.
const LIVE_ROUTES: usize = 50;
/// Per writer: more names, made (and removed) while changes stream in.
const SPARE_ROUTES: usize = 10;
/// Per writer and round, a bound on its changes.
const MAX_CHANGES: usize = 50_000;
/// The longest a round may stream before its kill.
const ROUND_LIMIT: Duration = Duration::from_secs(20);
/// The journal polled this often for a compaction.
const POLL: Duration = Duration::from_millis(5);
/// In every record: deployers' records carry a release's spec, and larger
/// records make a journal compact after fewer changes.
const PADDING: usize = 1024;

/// Five kills: three at random moments, two as the journal compacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_changes_stream_in_loses_no_acknowledged_change() {
    let mut crash = Crash::start("crash").await;
    crash.make_routes().await;
    let kills = [
        crash.at_random(),
        Kill::AtCompaction,
        crash.at_random(),
        Kill::AtCompaction,
        crash.at_random(),
    ];
    for (round, kill) in kills.into_iter().enumerate() {
        crash.round(round, kill).await;
        crash.restart().await;
        crash.check(round).await;
    }
    crash.summary();
}

/// A proxy that stops (or hands over to `cyan proxy upgrade`'s successor)
/// leaves its state as one snapshot with an empty journal: what an older
/// cyan, which knows no journal, reads after a downgrade. And a snapshot
/// such a cyan wrote outranks a journal left beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_proxy_leaves_one_snapshot_that_an_older_cyan_reads() {
    let mut proxy = TestProxy::start_listening("one-snapshot").await;
    let admin = proxy.admin();
    let up: SocketAddr = "127.0.0.1:1".parse().unwrap();
    for i in 0..20 {
        let app = format!("app{i}");
        proxy.route_by_host(&app, vec![up]).await;
        admin.put_record(&app, &json!({ "n": i })).await.unwrap();
    }
    admin.remove_route("app3", None).await.unwrap();
    let journal = proxy.home.join("proxy.journal");
    assert!(
        std::fs::metadata(&journal).unwrap().len() > 0,
        "changes are journaled"
    );
    let out = util::proxy::proxy_ctl("stop", &proxy.home).unwrap();
    assert!(out.status.success(), "{}", util::text(&out));
    let _ = proxy.child.wait();
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        0,
        "{}",
        files(&proxy.home)
    );
    // Read as an older cyan reads it: the snapshot's routes, nothing else.
    let older: Value =
        serde_json::from_slice(&std::fs::read(proxy.home.join("proxy.json")).unwrap()).unwrap();
    let routes = older["routes"].as_object().unwrap();
    assert_eq!(routes.len(), 19);
    assert!(!routes.contains_key("app3"));
    assert_eq!(routes["app19"]["record"], json!({ "n": 19 }));

    // That older cyan changes the snapshot, and a journal is left beside it.
    let mut written = older.clone();
    written.as_object_mut().unwrap().remove("seq");
    written["routes"].as_object_mut().unwrap().remove("app4");
    std::fs::write(proxy.home.join("proxy.json"), written.to_string()).unwrap();
    std::fs::write(
        &journal,
        r#"{"seq":99,"routes":{"app3":{"hosts":["app3.localhost"]}}}
"#,
    )
    .unwrap();
    proxy.child = spawn_proxy(&proxy.home, &["--listen", &proxy.addr()]);
    proxy.wait_ready().await;
    let names: Vec<String> = admin
        .routes()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names.len(), 18, "{names:?}");
    assert!(
        !names.iter().any(|n| n == "app3" || n == "app4"),
        "{names:?}"
    );
}

/// A torn last record is a write that was never acknowledged: the proxy
/// starts without it, keeps every acknowledged change, and what it appends
/// after is kept too (checked at the next kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_tail_keeps_every_acknowledged_change() {
    let mut crash = Crash::start("torn").await;
    // The journal is opened as the proxy starts.
    assert!(
        !journals(&crash.proxy.home).is_empty(),
        "no *.journal in the proxy's home: {}",
        files(&crash.proxy.home)
    );
    crash.make_routes().await;
    let kills = [crash.at_random(), Kill::AtCompaction, crash.at_random()];
    for (round, kill) in kills.into_iter().enumerate() {
        crash.round(round, kill).await;
        for journal in journals(&crash.proxy.home) {
            tear(&journal, round);
        }
        crash.restart().await;
        crash.check(round).await;
    }
    crash.summary();
}

/// When a round's proxy is killed.
#[derive(Debug, Clone, Copy)]
enum Kill {
    After(Duration),
    /// 0-30 ms after a compaction is seen (a `*.journal` got smaller): in
    /// the middle of it, or just after; the round fails if none comes.
    /// Without a journal, after a second.
    AtCompaction,
}

/// A proxy on its own home, the writers changing its routes, and the
/// upstreams those routes go to.
struct Crash {
    /// The test's own, in what it prints.
    tag: String,
    proxy: TestProxy,
    writers: Vec<Writer>,
    upstreams: Arc<Vec<(SocketAddr, String)>>,
    seed: u64,
    rng: u64,
    /// Rounds' counts, for the summary: acknowledged changes, seconds.
    rounds: Vec<(u64, f64)>,
    compactions: usize,
    started: Instant,
}

impl Crash {
    /// The proxy, and six upstreams that answer with their names.
    async fn start(tag: &str) -> Crash {
        let started = Instant::now();
        let seed = std::env::var("CYAN_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("[{tag}] CYAN_CRASH_SEED={seed}");
        let proxy = TestProxy::start_listening(tag).await;
        let mut upstreams = Vec::new();
        for i in 0..6 {
            let name = format!("u{i}");
            upstreams.push((answering(fixed(name.as_bytes()), false).await, name));
        }
        Crash {
            tag: tag.to_string(),
            proxy,
            writers: (0..WRITERS).map(|id| Writer::new(id, seed)).collect(),
            upstreams: Arc::new(upstreams),
            seed,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            rounds: Vec::new(),
            compactions: 0,
            started,
        }
    }

    /// A kill 300-1500 ms into a round.
    fn at_random(&mut self) -> Kill {
        Kill::After(Duration::from_millis(300 + next(&mut self.rng) % 1200))
    }

    /// Every writer's live routes, made by the writers at once.
    async fn make_routes(&mut self) {
        let began = Instant::now();
        let tasks: Vec<_> = self
            .writers
            .drain(..)
            .map(|w| tokio::spawn(w.make_routes(self.proxy.admin(), self.upstreams.clone())))
            .collect();
        for t in tasks {
            self.writers.push(t.await.unwrap());
        }
        eprintln!(
            "[{}] {} routes made in {:.1}s",
            self.tag,
            WRITERS * LIVE_ROUTES,
            began.elapsed().as_secs_f64()
        );
    }

    /// Streams changes from every writer until `kill` says, then kills the
    /// proxy (SIGKILL) and waits for the writers to stop.
    async fn round(&mut self, round: usize, kill: Kill) {
        let home = self.proxy.home.clone();
        let killed = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        let until = began + ROUND_LIMIT;
        let tasks: Vec<_> = self
            .writers
            .drain(..)
            .map(|w| {
                let (admin, upstreams) = (self.proxy.admin(), self.upstreams.clone());
                tokio::spawn(w.stream(admin, upstreams, killed.clone(), until))
            })
            .collect();
        let mut last = journal_bytes(&home);
        let mut compacted = 0;
        loop {
            tokio::time::sleep(POLL).await;
            let now = journal_bytes(&home);
            if now < last {
                compacted += 1;
            }
            last = now;
            let due = match kill {
                Kill::After(d) => began.elapsed() >= d,
                Kill::AtCompaction => compacted > 0,
            };
            if due || Instant::now() >= until || tasks.iter().all(|t| t.is_finished()) {
                break;
            }
        }
        if matches!(kill, Kill::AtCompaction) {
            let jitter = next(&mut self.rng) % 30;
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        killed.store(true, Ordering::SeqCst);
        self.proxy.kill9();
        let took = began.elapsed();
        for t in tasks {
            self.writers.push(t.await.unwrap());
        }
        let acked: u64 = self.writers.iter().map(|w| w.acked).sum();
        let before: u64 = self.rounds.iter().map(|r| r.0).sum();
        let acked = acked - before - self.made();
        self.rounds.push((acked, took.as_secs_f64()));
        self.compactions += compacted;
        eprintln!(
            "[{} round {round}] {kill:?}: killed after {:.2}s, {acked} changes acknowledged \
             ({:.0}/s), {} in flight, {compacted} compaction(s) seen; left: {}",
            self.tag,
            took.as_secs_f64(),
            acked as f64 / took.as_secs_f64(),
            self.writers
                .iter()
                .filter(|w| w.in_flight.is_some())
                .count(),
            files(&home),
        );
        assert!(
            !matches!(kill, Kill::AtCompaction) || compacted > 0,
            "round {round}: {:?} grew to {last} bytes over {acked} acknowledged changes in \
             {:.1}s and never got smaller: no compaction to crash in (seed {})",
            journals(&home),
            took.as_secs_f64(),
            self.seed
        );
    }

    /// The changes that made the writers' routes, before any round.
    fn made(&self) -> u64 {
        (WRITERS * LIVE_ROUTES * 2) as u64
    }

    /// Starts the proxy again on its home and port, as it was started; it
    /// must come up (a proxy that refuses its own home fails here, with
    /// its log).
    async fn restart(&mut self) {
        let listen = self.proxy.addr();
        self.proxy.child = spawn_proxy(&self.proxy.home, &["--listen", &listen]);
        let (admin, home) = (self.proxy.admin(), self.proxy.home.clone());
        let child = &mut self.proxy.child;
        wait::until_async(
            "the proxy to come up again on its home",
            Duration::from_secs(15),
            Duration::from_millis(20),
            async || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "the restarted proxy exited ({status}) instead of serving its home {}:\n{}",
                        home.display(),
                        log_tail(&home)
                    );
                }
                admin.health().await.ok().map(drop)
            },
            async || log_tail(&home),
        )
        .await
    }

    /// Every route is as last acknowledged (or as its writer's in-flight
    /// change made it), and no other route exists; then a few are served
    /// as they now stand.
    async fn check(&mut self, round: usize) {
        let views = self.proxy.admin().routes().await.unwrap();
        let mut now: HashMap<String, Acked> = views
            .iter()
            .map(|v| (v.name.clone(), Acked::of(&v.state)))
            .collect();
        let mut wrong = Vec::new();
        for w in &mut self.writers {
            let in_flight = w.in_flight.take();
            for (i, (name, acked)) in w.routes.iter_mut().enumerate() {
                let seen = now.remove(name.as_str());
                let either = in_flight.as_ref().filter(|(j, _)| *j == i);
                let ok = seen == *acked || either.is_some_and(|(_, new)| seen == *new);
                if !ok {
                    wrong.push(format!(
                        "{name}: acknowledged {}{}, restored {}",
                        summary(acked),
                        either.map_or(String::new(), |(_, new)| format!(
                            " (or, in flight, {})",
                            summary(new)
                        )),
                        summary(&seen)
                    ));
                }
                // Either way of the one in flight is now the acknowledged one.
                *acked = seen;
            }
        }
        wrong.extend(
            now.keys()
                .map(|name| format!("{name}: restored, never made")),
        );
        assert!(
            wrong.is_empty(),
            "round {round}: {} of {} routes are not as acknowledged after kill -9 and restart \
             (seed {}):\n{}",
            wrong.len(),
            WRITERS * (LIVE_ROUTES + SPARE_ROUTES),
            self.seed,
            wrong.join("\n")
        );
        self.check_served(round).await;
    }

    /// Ten routes picked at random answer as their state says: a route
    /// removed is a 404, one in maintenance a 503, a live one its live
    /// color's upstream.
    async fn check_served(&mut self, round: usize) {
        let names: HashMap<SocketAddr, &str> = self
            .upstreams
            .iter()
            .map(|(a, n)| (*a, n.as_str()))
            .collect();
        let all: Vec<(&String, &Option<Acked>)> = self
            .writers
            .iter()
            .flat_map(|w| w.routes.iter().map(|(n, a)| (n, a)))
            .collect();
        for _ in 0..10 {
            let (name, acked) = all[(next(&mut self.rng) % all.len() as u64) as usize];
            let resp = get(&self.proxy.addr(), &format!("{name}.localhost"), "/").await;
            let status = resp.split(' ').nth(1).unwrap_or("");
            let served = match acked {
                None => status == "404",
                Some(r) if r.maintenance.is_some() => status == "503",
                Some(Acked { live: None, .. }) => true,
                Some(r) => {
                    let live = &r.colors[&r.live.unwrap()];
                    status == "200" && live.iter().any(|u| names[&u.addr] == body(&resp))
                }
            };
            assert!(
                served,
                "round {round}: {name} (restored as {}) answered:\n{resp}",
                summary(acked)
            );
        }
    }

    fn summary(&self) {
        let changes: u64 = self.rounds.iter().map(|r| r.0).sum();
        eprintln!(
            "[{}] {} kills, {changes} changes acknowledged in them (plus {} to make the routes), \
             {} compaction(s) seen, {:.1}s in all",
            self.tag,
            self.rounds.len(),
            self.made(),
            self.compactions,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// What the admin API last acknowledged for one route (`Option::None`: it
/// was removed, or never made).
#[derive(Debug, Clone, PartialEq)]
struct Acked {
    live: Option<Color>,
    colors: BTreeMap<Color, Vec<Upstream>>,
    record: Value,
    maintenance: Option<Maintenance>,
    draining: bool,
    /// The lease's token and holder (a renewal changes the holder).
    lock: Option<(String, String)>,
}

impl Acked {
    /// A route as `put_route` makes it.
    fn made() -> Acked {
        Acked {
            live: None,
            colors: BTreeMap::new(),
            record: Value::Null,
            maintenance: None,
            draining: false,
            lock: None,
        }
    }

    fn of(state: &RouteState) -> Acked {
        Acked {
            live: state.live,
            colors: state.colors.clone(),
            record: state.record.clone(),
            maintenance: state.maintenance.clone(),
            draining: state.draining,
            lock: state
                .lock
                .as_ref()
                .map(|l| (l.token.clone(), l.holder.clone())),
        }
    }
}

/// A route's state in one line, its record by its counter.
fn summary(route: &Option<Acked>) -> String {
    let Some(r) = route else {
        return "absent".into();
    };
    let colors: Vec<String> = r
        .colors
        .iter()
        .map(|(c, ups)| {
            let ports: Vec<u16> = ups.iter().map(|u| u.addr.port()).collect();
            format!("{c}={ports:?}")
        })
        .collect();
    format!(
        "{{live {:?}, {}, record n={}, maintenance {:?}, draining {}, lock {:?}}}",
        r.live,
        colors.join(" "),
        r.record["n"],
        r.maintenance.as_ref().map(|m| m.retry_after_s),
        r.draining,
        r.lock.as_ref().map(|l| &l.1)
    )
}

/// One admin call.
#[derive(Debug)]
enum Change {
    Make,
    Switch {
        color: Color,
        upstreams: Vec<Upstream>,
        record: Option<Value>,
    },
    SetColor(Color, Vec<Upstream>),
    Record(Value),
    Maintenance(Option<Maintenance>),
    Draining(bool),
    Lock(String),
    Unlock,
    Remove,
}

/// Changes its own routes, one at a time, keeping what was acknowledged.
struct Writer {
    id: usize,
    rng: u64,
    /// Counts its changes: in records, maintenance pages and lease holders,
    /// so that each change leaves a value of its own.
    n: u64,
    routes: Vec<(String, Option<Acked>)>,
    /// The change sent when the proxy was killed: the route, and what it
    /// is if the change was made.
    in_flight: Option<(usize, Option<Acked>)>,
    acked: u64,
}

impl Writer {
    fn new(id: usize, seed: u64) -> Writer {
        Writer {
            id,
            rng: (seed ^ (id as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f)) | 1,
            n: 0,
            routes: (0..LIVE_ROUTES + SPARE_ROUTES)
                .map(|i| (format!("w{id}-r{i}"), None))
                .collect(),
            in_flight: None,
            acked: 0,
        }
    }

    /// Makes its first `LIVE_ROUTES` routes, live on blue.
    async fn make_routes(
        mut self,
        admin: AdminClient,
        ups: Arc<Vec<(SocketAddr, String)>>,
    ) -> Self {
        for i in 0..LIVE_ROUTES {
            for _ in 0..2 {
                let (change, next) = self.plan(i, &ups);
                let name = &self.routes[i].0;
                if let Err(e) = send(&admin, name, &change).await {
                    panic!("writer {}: {change:?} on {name}: {e}", self.id);
                }
                self.routes[i].1 = next;
                self.acked += 1;
            }
        }
        self
    }

    /// Changes its routes at random until the proxy is gone (`killed`),
    /// `until`, or `MAX_CHANGES`. Any change refused before the kill fails
    /// the test: each is one the proxy takes.
    async fn stream(
        mut self,
        admin: AdminClient,
        ups: Arc<Vec<(SocketAddr, String)>>,
        killed: Arc<AtomicBool>,
        until: Instant,
    ) -> Self {
        for _ in 0..MAX_CHANGES {
            if Instant::now() >= until {
                break;
            }
            let i = (next(&mut self.rng) % self.routes.len() as u64) as usize;
            let (change, next) = self.plan(i, &ups);
            match send(&admin, &self.routes[i].0, &change).await {
                Ok(()) => {
                    self.routes[i].1 = next;
                    self.acked += 1;
                }
                Err(_) if killed.load(Ordering::SeqCst) => {
                    self.in_flight = Some((i, next));
                    break;
                }
                Err(e) => panic!(
                    "writer {}: {change:?} on {}: {e}",
                    self.id, self.routes[i].0
                ),
            }
        }
        self
    }

    /// The next change to route `i`, and the route once it is made: a
    /// route absent is made, one made is switched live; a live one gets
    /// any change, now and then its removal.
    fn plan(&mut self, i: usize, ups: &[(SocketAddr, String)]) -> (Change, Option<Acked>) {
        self.n += 1;
        let n = self.n;
        let Some(now) = self.routes[i].1.clone() else {
            return (Change::Make, Some(Acked::made()));
        };
        let upstreams = self.pick(ups);
        let mut next = now.clone();
        let Some(live) = now.live else {
            next.live = Some(Color::Blue);
            next.colors.insert(Color::Blue, upstreams.clone());
            let change = Change::Switch {
                color: Color::Blue,
                upstreams,
                record: None,
            };
            return (change, Some(next));
        };
        let roll = next_below(&mut self.rng, 100);
        let change = match roll {
            0..25 => {
                let color = live.other();
                let record = (roll < 8).then(|| self.record(i, n));
                next.live = Some(color);
                next.colors.insert(color, upstreams.clone());
                if let Some(r) = &record {
                    next.record = r.clone();
                }
                Change::Switch {
                    color,
                    upstreams,
                    record,
                }
            }
            25..35 => {
                next.colors.insert(live.other(), upstreams.clone());
                Change::SetColor(live.other(), upstreams)
            }
            35..55 => {
                next.record = self.record(i, n);
                Change::Record(next.record.clone())
            }
            55..65 => {
                next.maintenance = match now.maintenance {
                    Some(_) => None,
                    None => Some(Maintenance {
                        retry_after_s: n,
                        message: Some(format!("w{} n{n}", self.id)),
                    }),
                };
                Change::Maintenance(next.maintenance.clone())
            }
            65..75 => {
                next.draining = !now.draining;
                Change::Draining(next.draining)
            }
            75..90 => {
                let holder = format!("deploy w{} n{n}", self.id);
                next.lock = Some((self.token(i), holder.clone()));
                Change::Lock(holder)
            }
            90..96 => {
                next.lock = None;
                Change::Unlock
            }
            _ => return (Change::Remove, None),
        };
        (change, Some(next))
    }

    /// One to three of the upstreams, in any order.
    fn pick(&mut self, ups: &[(SocketAddr, String)]) -> Vec<Upstream> {
        let mut all: Vec<SocketAddr> = ups.iter().map(|u| u.0).collect();
        let k = 1 + next_below(&mut self.rng, 3) as usize;
        (0..k)
            .map(|_| {
                let j = next_below(&mut self.rng, all.len() as u64) as usize;
                all.swap_remove(j).into()
            })
            .collect()
    }

    fn record(&self, i: usize, n: u64) -> Value {
        json!({
            "route": self.routes[i].0,
            "n": n,
            "release": "r".repeat(PADDING),
        })
    }

    /// The lease token of route `i`: one per route, so taking it again is
    /// a renewal and removing the route with it is allowed.
    fn token(&self, i: usize) -> String {
        format!("token-{}", self.routes[i].0)
    }
}

/// Sends `change` to `route`; `Err`: the proxy refused it or did not
/// answer.
async fn send(admin: &AdminClient, route: &str, change: &Change) -> Result<(), String> {
    let token = format!("token-{route}");
    let done = match change {
        Change::Make => {
            let spec = host_route(&[&format!("{route}.localhost")]);
            admin.put_route(route, &spec).await
        }
        Change::Switch {
            color,
            upstreams,
            record,
        } => {
            let req = SwitchRequest {
                color: *color,
                upstreams: Some(upstreams.clone()),
                record: record.clone(),
                route: None,
            };
            admin.switch(route, &req).await.map(drop)
        }
        Change::SetColor(color, upstreams) => {
            admin.set_color(route, *color, upstreams.clone()).await
        }
        Change::Record(record) => admin.put_record(route, record).await,
        Change::Maintenance(m) => admin.set_maintenance(route, m.clone()).await,
        Change::Draining(d) => admin.set_draining(route, *d).await,
        Change::Lock(holder) => {
            let req = LockRequest {
                token,
                holder: holder.clone(),
                pid: std::process::id(),
                // Another host's lease: only its ttl counts.
                host: "crash-test.invalid".into(),
                ttl_ms: 3_600_000,
            };
            admin.lock(route, &req).await.map(drop)
        }
        Change::Unlock => admin.unlock(route, &token).await,
        Change::Remove => admin.remove_route(route, Some(&token)).await,
    };
    done.map_err(|e| e.to_string())
}

/// The journal files in `home`: names ending in `.journal`.
fn journals(home: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(home) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "journal") && p.is_file())
        .collect();
    found.sort();
    found
}

fn journal_bytes(home: &Path) -> u64 {
    journals(home)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Appends a torn record to `journal`, a different one each `round`: the
/// first half of its last record (a write cut short), half a JSON record
/// of its own, or bytes that are no record at all.
fn tear(journal: &Path, round: usize) {
    use std::io::Write;
    let bytes = std::fs::read(journal).unwrap();
    let last = bytes
        .strip_suffix(b"\n")
        .unwrap_or(&bytes)
        .rsplit(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let torn: Vec<u8> = match round % 3 {
        0 if last.len() >= 2 => last[..last.len() / 2].to_vec(),
        0 | 1 => {
            br#"{"seq": 18446744073709551615, "routes": {"torn": {"hosts": ["torn.localh"#.to_vec()
        }
        _ => vec![0, 0, 0xff, 0xfe, b'{', b'"', 0x80, 0],
    };
    eprintln!(
        "tearing {} ({} bytes): {:?}",
        journal.display(),
        bytes.len(),
        String::from_utf8_lossy(&torn[..torn.len().min(80)])
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(journal)
        .unwrap();
    f.write_all(&torn).unwrap();
}

/// The files in `home` and their sizes, but its log and lock.
fn files(home: &Path) -> String {
    let Ok(dir) = std::fs::read_dir(home) else {
        return String::new();
    };
    let mut found: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let skip = ["proxy.log", "proxy.lock"].contains(&name.as_str());
            (!skip).then(|| format!("{name} {}", e.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    found.sort();
    found.join(", ")
}

/// The end of the proxy's log, if it keeps one in its home.
fn log_tail(home: &Path) -> String {
    let log = std::fs::read_to_string(home.join("proxy.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// xorshift64*: the test's own choices, replayable from its seed.
fn next(state: &mut u64) -> u64 {
    let mut x = *state | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn next_below(state: &mut u64, n: u64) -> u64 {
    next(state) % n
}
