//! The command line as clap sees it: every command, flag and value parser,
//! and nothing that runs them.
//!
//! Apart from `run` (in `cli/mod.rs`), as ripgrep keeps its flags apart
//! from what acts on them: this file is what `--help` says, in one place,
//! and a command's code starts from values already parsed. The library's
//! own types are parsed through their `FromStr` (`one_of`), so the library
//! needs no clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{ImageRepo, Name, PlatformKind};
use crate::output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "cyan",
    version,
    about = "Blue/green deploys for containers: atomic switch, zero dropped requests, instant rollback",
    long_about = "cyan builds your image, starts the new version (green) beside the live one (blue), \
health-gates it, switches traffic atomically through the cyan proxy, and keeps blue running so a \
rollback is one more atomic switch.\n\nA first deploy:\n  cyan deploy -c cyan.yaml --version 1.0.0\n\
Then:\n  cyan status -c cyan.yaml\n  cyan rollback -c cyan.yaml",
    after_help = "Exit codes: 0 ok, 1 internal, 2 config, 3 health gate failed, 4 lock held, \
5 Docker/proxy/registry unreachable, 6 verification failed (rolled back), 7 build failed, \
8 push failed, 9 refused (e.g. nothing to roll back to), 10 a lifecycle hook failed."
)]
pub struct Cli {
    /// Output format for results (progress always goes to stderr).
    #[arg(short, long, global = true, value_parser = described::<Format>([
        ("text", "for people"),
        ("json", "one JSON document"),
        ("github", "GitHub Actions: log groups, step outputs, job summary, annotations"),
    ]), default_value = "text")]
    pub output: Format,
    /// Log format for diagnostics (RUST_LOG sets the level).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Folder of the cyan proxy (socket, state, log) [env: CYAN_HOME]
    #[arg(long, global = true)]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Path to the app's config.
    #[arg(short, long, default_value = "cyan.yaml")]
    pub config: PathBuf,
    /// The environment (stage) to act on, one of cyan.yaml's `environments:`
    /// (e.g. staging); required when the file has them.
    #[arg(short, long, value_name = "NAME", env = "CYAN_ENVIRONMENT")]
    pub environment: Option<String>,
    /// Act on a branch's own copy of the environment: named
    /// `<environment>--<BRANCH>`, served at `<BRANCH>.<proxy.host>`, one
    /// replica, no approval (what `cyan serve` deploys per branch). BRANCH
    /// is a DNS label: lowercase letters, digits and '-'.
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Act on these of cyan.yaml's `hosts:` only (names, comma-separated):
    /// to bring back a host that was down, or look at one. Hosts left out
    /// keep what they run; `cyan status` shows them behind.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', env = "CYAN_HOSTS")]
    pub hosts: Vec<String>,
}

/// Which platform to act on, when it is not cyan.yaml's.
#[derive(Args, Debug, Clone, Default)]
pub struct PlatformArg {
    /// Act on this platform instead of cyan.yaml's `platform` (docker, kubernetes).
    #[arg(long, value_parser = one_of::<PlatformKind>(&PlatformKind::NAMES))]
    pub platform: Option<PlatformKind>,
}

/// Where the image goes, when it is not where cyan.yaml says.
#[derive(Args, Debug, Clone, Default)]
pub struct ImageOverride {
    /// Image repository to use instead of cyan.yaml's `image` (e.g. ghcr.io/acme/web).
    #[arg(long, value_name = "REPO", value_parser = ImageRepo::parse)]
    pub image: Option<ImageRepo>,
    /// Registry host to push to, replacing the image's own (e.g. ghcr.io, 127.0.0.1:5000).
    #[arg(long, value_name = "HOST")]
    pub registry: Option<String>,
}

/// What `build` and `push` act on.
#[derive(Args, Debug, Clone)]
pub struct ImageStep {
    #[command(flatten)]
    pub(super) config: ConfigArg,
    /// Release version (default: VERSION file, then `git describe`).
    #[arg(long = "version", value_name = "VERSION")]
    pub(super) release: Option<String>,
    #[command(flatten)]
    pub(super) image: ImageOverride,
}

#[derive(Args, Debug, Clone)]
pub struct LockWait {
    /// Wait this long for another deploy's lock instead of failing at once (e.g. 5m).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build, launch beside live, health-gate, switch, verify. The main command.
    ///
    /// Re-running it after a crash or Ctrl-C continues where it stopped.
    Deploy {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        platform: PlatformArg,
        /// Release version (default: VERSION file, then `git describe`).
        #[arg(long = "version", value_name = "VERSION")]
        release: Option<String>,
        #[command(flatten)]
        image: ImageOverride,
        /// Stop at the gated candidate until `cyan promote` (overrides require_approval).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        require_approval: Option<bool>,
        /// Build from this folder instead of cyan.yaml's build.context (a
        /// checkout of the commit being deployed).
        #[arg(long, value_name = "DIR")]
        context: Option<PathBuf>,
        /// If the deploy fails after traffic moved to the new release (a lost
        /// proxy during verify, say), switch back to the previous one. A
        /// verify breach always switches back.
        #[arg(long)]
        rollback_on_failure: bool,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Switch back to the previous release: instant while it is still running.
    Rollback {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        platform: PlatformArg,
        /// Roll back to this version instead of the previous one.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        image: ImageOverride,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Approve the gated candidate (require_approval: true) and switch to it;
    /// or, with --from and --to, ship one environment's live, verified
    /// image to another.
    ///
    /// `cyan promote -e production` approves production's candidate.
    /// `cyan promote --from staging --to production` deploys to production
    /// exactly the image digest live and verified in staging; it refuses
    /// (exit 9) when staging's release did not pass verification, or when
    /// staging moved on from --version since the promotion was asked for.
    Promote {
        #[command(flatten)]
        config: ConfigArg,
        /// The environment whose live, verified release is shipped.
        #[arg(long, value_name = "ENVIRONMENT", requires = "to")]
        from: Option<String>,
        /// The environment it is shipped to (with --from).
        #[arg(long, value_name = "ENVIRONMENT", requires = "from")]
        to: Option<String>,
        /// With --from: the version expected live in the source; refused if
        /// the source moved on.
        #[arg(long = "version", value_name = "VERSION", requires = "from")]
        release: Option<String>,
        #[command(flatten)]
        platform: PlatformArg,
        #[command(flatten)]
        image: ImageOverride,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Stop the rollout in progress: remove the candidate that waits for
    /// approval (on Kubernetes also one being gated; one being verified is
    /// rolled back). The live release is untouched.
    Abort {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        platform: PlatformArg,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Remove an app from this host: its route in the proxy (traffic to it
    /// stops at once), its containers of both colors, and its deploy record
    /// and history. Images are kept. Without --yes it only says what it
    /// would remove. Refused while a deploy holds the app's lock.
    ///
    /// This is how a host or listen address that another app holds is
    /// freed (`cyan deploy` names the holder when it refuses).
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// Really remove it.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        lock: LockWait,
    },
    /// Show what is live, previous and candidate (`-o json` is a stable contract).
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        platform: PlatformArg,
    },
    /// Show the release history, newest first.
    History {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        platform: PlatformArg,
    },
    /// Watch a deploy as it happens: an app of this host (-c), or any URL
    /// (--url).
    ///
    /// With -c: the app's colors from this host's proxy, per second:
    /// requests/s, 5xx/s, p50 and p99 latency, in-flight requests; which
    /// is live; and the deploy's steps (gate passed, switched, verifying,
    /// verified, rolled back, lock taken) as they happen, whoever deploys.
    /// Redrawn in place on a terminal, plain lines otherwise (-o json: one
    /// object per line). Ends at Ctrl-C, SIGTERM or --for.
    ///
    /// With --url: the shell loop `while true; do curl -s URL; sleep 1;
    /// done`, made a tool. Says as it happens which version answers and
    /// when errors start and stop, then sums up.
    ///
    /// One probe (GET) every --every, each with its own deadline
    /// (--timeout), one at a time: a probe longer than --every delays the
    /// next, they never pile up. Probes keep one connection alive, as
    /// browsers and HTTP clients do, and open a new one when the server
    /// closes it: so a server that resets kept connections as it stops is
    /// seen (a new connection per probe would hide that). A request on a
    /// kept connection that the server had closed before it was sent is
    /// sent again on a new one, as clients do.
    ///
    /// A probe fails when the connection is refused (`refused`), reset
    /// (`reset`) or closed before a whole answer (`closed`), no whole answer
    /// came within --timeout (`timeout`), TLS failed (`tls`), another
    /// connect error (`connect`), the answer is not HTTP (`invalid`), or
    /// the status is 5xx (counted by status: `502`). A 4xx is an answer,
    /// not an outage (the app said no, to that path or that client): it is
    /// counted apart and opens no error window.
    ///
    /// Failed probes in a row make an error window: from the first failed
    /// probe to the next answered one. Printed when it opens (so a long
    /// outage shows while it lasts) and when it closes: start, end,
    /// duration, failed probes by kind (`refused ×12, 502 ×3`).
    ///
    /// The answering version: the X-Version response header, else
    /// X-App-Version (--version-header names another), else the top-level
    /// field `version` of a JSON body (--version-field names another).
    /// Neither: `-`, and only errors are followed. The first version is
    /// printed, then each change (`1.0.0 -> 2.0.0`).
    ///
    /// The summary, at the end (Ctrl-C, SIGTERM, --for elapsed, --count
    /// probes made): probes made, answered (4xx among them) and failed; the
    /// error windows, their total and the longest; each version with its
    /// answers. A probe cut short by the end is not counted. Each line is
    /// written as it happens; `-o json` makes each one JSON object
    /// (`event`: started, version, window_opened, window_closed, summary).
    #[command(
        after_help = "Example, the demo deployed by cyan on 127.0.0.1:8000 (examples/demo):\n  \
cyan watch -c examples/demo/cyan.yaml     # in a terminal of its own: colors, traffic, steps\n  \
cyan watch --url http://127.0.0.1:8000/ | tee watch.log &\n  \
cyan deploy -c examples/demo/cyan.yaml --version 2.0.0\n  \
kill -INT %1            # or Ctrl-C in its own terminal: the summary\n\
In CI, beside a deploy: cyan watch --url URL --for 60s -o json > watch.jsonl\n\n\
Exit codes (--url): 0 no probe failed; 6 some probe failed (as a failed verification: \
the URL did not hold; watch only looks, nothing is rolled back), after the summary \
(-o json adds an error object); 2 a bad flag or URL; 1 stdout cannot be written. \
A reader that goes away (`| head`) ends the watch."
    )]
    Watch {
        /// The URL to probe: http:// or https:// (verified against
        /// Mozilla's roots and the host's; SSL_CERT_FILE adds others).
        #[arg(long, value_name = "URL", conflicts_with_all = ["config", "environment"])]
        url: Option<String>,
        /// Watch the app of this cyan.yaml instead of a URL: its colors'
        /// requests/s, 5xx/s, latency and in-flight requests (per second),
        /// which is live, and the deploy's steps (gate passed, switched,
        /// verified, rolled back) as they happen, read from this host's
        /// proxy. Redrawn in place on a terminal; plain lines otherwise.
        #[arg(short, long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// With -c: the environment to watch.
        #[arg(short, long, value_name = "NAME")]
        environment: Option<String>,
        /// How often a probe starts (at least 10ms), e.g. 200ms, 1s.
        #[arg(long, value_parser = parse_every, default_value = "200ms")]
        every: Duration,
        /// Each probe's deadline: connect, request, the whole answer.
        #[arg(long, value_parser = parse_positive, default_value = "1s")]
        timeout: Duration,
        /// Stop after this long, e.g. 30s, 5m (default: at Ctrl-C or SIGTERM).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_positive, conflicts_with = "count")]
        duration: Option<Duration>,
        /// Stop after this many probes.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// The response header naming the version, instead of X-Version
        /// then X-App-Version.
        #[arg(long, value_name = "NAME")]
        version_header: Option<String>,
        /// The JSON body's top-level field naming the version, when no
        /// header does.
        #[arg(long, value_name = "NAME", default_value = "version")]
        version_field: String,
    },
    /// Build and tag the image (VERSION and latest) only.
    Build(ImageStep),
    /// Push VERSION and latest to the image's registry only.
    Push(ImageStep),
    /// Serve a 503 maintenance page (with Retry-After) instead of the app, or stop.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Hold the app's new requests (they wait, they do not fail) until the
    /// next switch releases them to the new color, e.g. around a migration:
    /// `cyan hold on --for 30s; ./migrate; cyan deploy` (or `cyan promote`).
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Write a commented cyan.yaml for the project in this folder, read
    /// from what it holds: the app's name from the folder's, the port from
    /// the Dockerfile's EXPOSE, the health path from its HEALTHCHECK (and
    /// Docker's health gating when it has one), where versions come from
    /// (a VERSION file, git). Each value says in a comment where it came
    /// from; a guess says it is one. The file is checked with cyan's own
    /// loader before it is written. An existing cyan.yaml is never
    /// replaced, nor one written beside a cyan.yml (exit 2), without
    /// --force.
    #[command(
        after_help = "Example, in a folder `My_Web` whose Dockerfile says EXPOSE 3000:\n  \
cyan init                  # writes cyan.yaml: app my-web, port 3000, on http://127.0.0.1:8000\n  \
cyan deploy --version 1.0.0\n  \
curl http://127.0.0.1:8000/\n\n\
Elsewhere: cyan init --dir path/to/app --listen 127.0.0.1:8001 --app web\n\
-o json prints what was read and chosen. The README's config reference explains every key."
    )]
    Init {
        /// The project's folder (where its Dockerfile is); cyan.yaml is written there.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Replace an existing cyan.yaml.
        #[arg(long)]
        force: bool,
        /// The app's name, instead of one made from the folder's name.
        #[arg(long, value_name = "NAME", value_parser = Name::parse)]
        app: Option<Name>,
        /// Where the cyan proxy serves the app (proxy.listen); another app
        /// on this host needs another port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
    },
    /// Work with cyan.yaml.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run or manage the cyan proxy (deploy starts one by itself when needed).
    Proxy {
        #[command(subcommand)]
        command: ProxyCommand,
    },
    /// Print the BlueGreenDeployment CustomResourceDefinition (YAML), for
    /// `cyan crd | kubectl apply -f -`.
    Crd,
    /// Run the Kubernetes operator that reconciles BlueGreenDeployments
    /// (in the cluster: see manifests/operator.yaml).
    Operator {
        /// Where /metrics, /healthz and /readyz listen.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Watch only this namespace (default: all). Replicas that watch the
        /// same scope elect one leader: the Lease is `cyan-operator`, or
        /// `cyan-operator-<namespace>` with this flag. Scopes elect apart,
        /// so never run one over all namespaces beside one over a namespace.
        #[arg(long, env = "CYAN_WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "cyan-system")]
        lease_namespace: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
    },
    /// Deploy on a git forge's push webhooks (cyan.yaml's `serve:`).
    Serve {
        #[command(subcommand)]
        command: ServeCommand,
    },
    /// A web page of this host's apps: live and previous versions, the
    /// candidate and its phase, the lock, drift; requests/s, 5xx/s,
    /// latency and in-flight per color as they happen, with the switches
    /// marked; the release history and webhook deliveries; promote, abort
    /// and rollback buttons (the CLI's own commands, same lock, same exit
    /// codes). Foreground; SIGTERM or Ctrl-C stops it.
    ///
    /// The apps of the -c files get buttons; the proxy's other routes are
    /// listed. The page is compiled in and fetches nothing from elsewhere.
    ///
    /// Access: a token, always. On loopback (the default) one is made and
    /// printed in the URL to open (`http://127.0.0.1:7070/?token=…`): no
    /// other user of the machine can look or act without it. It is new at
    /// each start; --token-file gives a lasting one. Any other
    /// address needs --token-file (a login form; scripts may send
    /// `Authorization: Bearer TOKEN`) or --trust-header (a reverse proxy in
    /// front authenticates; give the Host it passes with --host). Every
    /// action needs the page's CSRF token; --read-only removes them.
    #[command(
        after_help = "Examples:\n  cyan dashboard -c web/cyan.yaml -c api/cyan.yaml   # prints http://127.0.0.1:7070/?token=…\n  \
cyan dashboard --listen 0.0.0.0:7070 --token-file /etc/cyan/dashboard.token\n  \
cyan dashboard --listen 10.0.0.5:7070 --trust-header X-Forwarded-User --read-only"
    )]
    Dashboard {
        /// An app's cyan.yaml (repeatable): all its environments are shown,
        /// with buttons. Default: ./cyan.yaml when there is one.
        #[arg(short, long = "config", value_name = "PATH")]
        configs: Vec<PathBuf>,
        /// Where the page is served (HTTP; put TLS in front of it).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        access: DashboardAccess,
    },
}

/// Who may use the dashboard, and how often it reads the proxy.
#[derive(Args, Debug, Clone)]
pub struct DashboardAccess {
    /// A file holding the dashboard's login token (16 characters or
    /// more); needed off loopback unless --trust-header is given.
    #[arg(long, value_name = "FILE", env = "CYAN_DASHBOARD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A reverse proxy in front of the dashboard authenticates and names
    /// the user in this header (e.g. X-Forwarded-User); a request without
    /// it is refused. Let only that proxy reach the dashboard.
    #[arg(long, value_name = "HEADER")]
    pub trust_header: Option<String>,
    /// A name the dashboard is reached by, besides localhost and IP
    /// addresses (repeatable; e.g. the name a reverse proxy passes as
    /// Host). Without --token-file, another Host is refused (421): that is
    /// what keeps a hostile page that rebinds its name to this address
    /// (DNS rebinding) out.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// The dashboard shows, never acts: no buttons, actions refused (403).
    #[arg(long)]
    pub read_only: bool,
    /// How often the dashboard reads the proxy's counters: each chart point.
    #[arg(long = "every", value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub dashboard_every: Duration,
}

#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Take webhook deliveries and deploy what the rules say (foreground;
    /// logs to stderr, RUST_LOG=info for every delivery; SIGTERM stops it).
    Run {
        /// Path to the app's config, with its `serve:` section.
        #[arg(short, long, default_value = "cyan.yaml")]
        config: PathBuf,
        /// Where to take deliveries (HTTP; put TLS in front of it).
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Folder of the deliveries log, the git cache and checkouts
        /// (default: <cyan home>/serve/<app>).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// How long a running deploy gets to finish after SIGTERM (e.g. 80s).
        #[arg(long, value_parser = parse_duration, default_value = "80s")]
        stop_timeout: Duration,
        /// The largest delivery taken, in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
        max_body: usize,
        /// Also serve the dashboard (`cyan dashboard`) of this app, with
        /// these deliveries, on this address (e.g. 127.0.0.1:7070).
        #[arg(long, value_name = "ADDR")]
        dashboard: Option<std::net::SocketAddr>,
        #[command(flatten)]
        access: DashboardAccess,
    },
    /// The deliveries taken, newest first, and what became of each.
    Deliveries {
        /// Path to the app's config, with its `serve:` section.
        #[arg(short, long, default_value = "cyan.yaml")]
        config: PathBuf,
        /// The server's state folder (default: <cyan home>/serve/<app>).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file; errors name file:line:column and the key.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// Answer every request with 503 and Retry-After; the app keeps running.
    On {
        #[command(flatten)]
        config: ConfigArg,
        /// What Retry-After tells clients.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        retry_after: Duration,
        /// The page's text.
        #[arg(long)]
        message: Option<String>,
    },
    /// Send traffic to the live color again.
    Off {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Start holding new requests; at most `--for` (capped at 60s), then they go on.
    On {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long = "for", value_parser = parse_duration, default_value = "30s")]
        duration: Duration,
    },
    /// Release the held requests to the live color now.
    Off {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProxyCommand {
    /// Run the proxy in the foreground (systemd-friendly; SIGTERM drains).
    Run {
        /// Extra listen addresses for host-routed apps (repeatable).
        #[arg(long, value_parser = fixed_port)]
        listen: Vec<std::net::SocketAddr>,
        /// TLS listen addresses for host-routed apps, certificates chosen by
        /// SNI from the apps' `proxy.tls` (repeatable, e.g. 0.0.0.0:443).
        #[arg(long, value_parser = fixed_port)]
        tls_listen: Vec<std::net::SocketAddr>,
        /// How long open connections get to finish at shutdown.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        drain_timeout: Duration,
        /// Serve Prometheus metrics at http://ADDR/metrics (loopback only, e.g. 127.0.0.1:9464).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Serving threads, each with its own event loop (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// A request head must arrive whole within this (slow heads get 408).
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        header_timeout: Duration,
        /// The longest wait for the next bytes of a request body (then 408).
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        body_timeout: Duration,
        /// How long a keep-alive connection may wait for its next request.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        idle_timeout: Duration,
        /// How often the apps' TLS files are checked for a renewed
        /// certificate (`cyan proxy reload` checks at once).
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        cert_check_interval: Duration,
        /// Also serve the admin API on this loopback address (needs --admin-token-file).
        #[arg(long, value_name = "ADDR", requires = "admin_token_file")]
        admin_listen: Option<std::net::SocketAddr>,
        /// File holding the bearer token TCP admin requests must carry (16+ characters).
        #[arg(long, value_name = "FILE", requires = "admin_listen")]
        admin_token_file: Option<PathBuf>,
        /// Automatic certificates for apps with `proxy.tls: acme`.
        #[command(flatten)]
        acme: Box<AcmeArgs>,
    },
    /// Show the proxy's routes and counters.
    Status,
    /// Read the apps' TLS files again now, and serve the certificates
    /// renewed in place (the proxy also checks on its own, every
    /// --cert-check-interval). A renewed pair that does not load is
    /// refused, and the last good one stays.
    Reload,
    /// Run the proxy as a container (FROM scratch, restart unless-stopped,
    /// state in the home folder, mounted) instead of a host process.
    Boot {
        /// The static cyan binary the container runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Extra listen addresses for host-routed apps (repeatable).
        #[arg(long, value_parser = fixed_port)]
        listen: Vec<std::net::SocketAddr>,
        /// Serve Prometheus metrics at http://ADDR/metrics (loopback only).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// More `cyan proxy run` flags for the container, after `--`, e.g.
        /// `-- --tls-listen 0.0.0.0:443 --header-timeout 5s --acme-email
        /// ops@example.com`. They are checked before anything starts. Files
        /// they name must be inside the proxy's home, which is mounted; the
        /// host's /etc/ssl/certs is mounted read-only for the ACME CA's roots.
        #[arg(last = true, value_name = "RUN_FLAGS")]
        run_flags: Vec<String>,
    },
    /// Run the proxy as a systemd service: started at boot, restarted after
    /// a crash, owned by no shell or CI job.
    ///
    /// Writes /etc/systemd/system/cyan-proxy.service, which runs `cyan proxy
    /// run` with this binary's absolute path (or --binary), this --home and
    /// the RUN_FLAGS after `--`; then runs `systemctl daemon-reload` and
    /// `systemctl enable --now cyan-proxy`. Where systemd does not run (no
    /// /run/systemd/system), it prints the unit and how to install it.
    ///
    /// Use it where the proxy should be a host process under systemd:
    /// `cyan proxy upgrade` then replaces it with no gap, and the unit
    /// follows the new process. Use `cyan proxy boot` where Docker should
    /// look after it instead (a replaced container restarts with a short
    /// gap).
    ///
    /// A proxy already serving this home outside systemd keeps serving: the
    /// unit is enabled but not started (both would contend for the home);
    /// the output says how to switch. Under systemd, stop the proxy with
    /// `systemctl stop cyan-proxy` (systemd starts again a proxy that `cyan
    /// proxy stop` ended); `systemctl reload cyan-proxy` runs `cyan proxy
    /// reload`.
    Install {
        /// The cyan binary the unit runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Write the unit into this folder instead of /etc/systemd/system
        /// (always, even where systemd does not run).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// Write the unit, but do not reload, enable or start anything.
        #[arg(long)]
        no_start: bool,
        /// Only print the unit, to stdout; write nothing.
        #[arg(long, conflicts_with_all = ["unit_dir", "no_start"])]
        print: bool,
        /// More `cyan proxy run` flags for the unit, after `--`, e.g. `--
        /// --listen 0.0.0.0:80 --tls-listen 0.0.0.0:443`. They are checked
        /// before anything is written; files they name must be absolute
        /// paths.
        #[arg(last = true, value_name = "RUN_FLAGS")]
        run_flags: Vec<String>,
    },
    /// Replace the running proxy with a new process, with no gap: it takes
    /// over the listening sockets, then the old one drains and exits.
    Upgrade {
        /// The cyan binary the new proxy runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Stop the proxy gracefully (open requests finish).
    Stop,
}

/// `cyan proxy run`'s ACME flags: the CA and account the proxy gets
/// certificates from for apps with `proxy.tls: acme`.
#[derive(Args, Debug)]
#[command(next_help_heading = "Automatic certificates (apps with proxy.tls: acme)")]
pub struct AcmeArgs {
    /// The ACME CA (RFC 8555 directory URL, HTTPS) that apps with
    /// `proxy.tls: acme` get certificates from; the proxy registers an
    /// account there, agreeing to the CA's terms of service, and keeps
    /// it and the certificates in its home (acme/, mode 0600).
    /// Certificates are renewed when a third of their lifetime is left.
    /// To try things out, Let's Encrypt's staging CA
    /// (https://acme-staging-v02.api.letsencrypt.org/directory) has
    /// generous rate limits, but browsers do not trust it.
    #[arg(long, value_name = "URL", default_value = crate::proxy::acme::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// Contact address for the ACME account: the CA writes there about a
    /// certificate left to expire, or policy changes. Optional.
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// A PEM file of CA roots trusted for the ACME directory's HTTPS,
    /// besides the system's: a private or test CA (pebble), or a host
    /// without roots of its own (a FROM scratch container).
    #[arg(long, value_name = "PEM")]
    pub acme_ca_root: Option<PathBuf>,
    /// How the CA checks that this host serves the app's names. The CA
    /// always comes to ports 80 and 443 of the name's address: they must
    /// reach the proxy's --listen and --tls-listen.
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "http-01",
        value_parser = described::<crate::proxy::acme::ChallengeKind>([
            ("http-01", "the CA fetches http://HOST/.well-known/acme-challenge/TOKEN (RFC 8555 §8.3); answered on the plain-HTTP listeners"),
            ("tls-alpn-01", "the CA makes a TLS handshake offering ALPN acme-tls/1 (RFC 8737); answered on the TLS listeners, for hosts whose port 80 is closed"),
        ])
    )]
    pub acme_challenge: crate::proxy::acme::ChallengeKind,
}

/// A listen address with a port of its own: port 0 would bind a random
/// port at every start, which no load balancer, health check or upgrade
/// (it hands over the sockets by address) can follow.
fn fixed_port(s: &str) -> std::result::Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s
        .parse()
        .map_err(|e| format!("{e} (write e.g. 0.0.0.0:80 or [::]:443)"))?;
    match addr.port() {
        0 => Err(
            "port 0 binds a random port at each start; write the port the proxy serves on".into(),
        ),
        _ => Ok(addr),
    }
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 30s, 5m)"))
}

/// A duration above zero.
fn parse_positive(s: &str) -> std::result::Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0 (write e.g. 1s, 500ms)".into()),
        d => Ok(d),
    }
}

/// `cyan watch --every`: at least `MIN_EVERY`.
fn parse_every(s: &str) -> std::result::Result<Duration, String> {
    let min = crate::watch::probe::MIN_EVERY;
    match parse_duration(s)? {
        d if d < min => Err(format!(
            "{s} is too often: at least {}ms (faster probes measure this machine more than the app)",
            min.as_millis()
        )),
        d => Ok(d),
    }
}

/// A flag's value parser for a type of the library (which knows no clap):
/// `names` listed in `--help` and in errors, parsed with its `FromStr`.
fn one_of<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    described::<T>(names.iter().map(|n| (*n, "")))
}

/// `one_of`, with what each value means, for `--help` (empty: nothing to
/// add to the name).
fn described<T>(
    values: impl IntoIterator<Item = (&'static str, &'static str)>,
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::{PossibleValue, TypedValueParser};
    let values = values.into_iter().map(|(name, help)| match help {
        "" => PossibleValue::new(name),
        help => PossibleValue::new(name).help(help),
    });
    clap::builder::PossibleValuesParser::new(values).try_map(|s| s.parse::<T>())
}
