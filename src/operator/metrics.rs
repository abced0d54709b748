//! The operator's Prometheus metrics: reconciles, failures by kind, reconcile
//! durations, switches, rollbacks and status writes lost to another writer.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Kind = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<Kind, Counter>,
    duration: Histogram,
    switches: Counter,
    rollbacks: Counter,
    conflicts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cyan_operator");
        let reconciles = Counter::default();
        let failures = Family::<Kind, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let switches = Counter::default();
        let rollbacks = Counter::default();
        let conflicts = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "switches",
            "Active Service selector switches to a new release",
            switches.clone(),
        );
        registry.register(
            "rollbacks",
            "Switches back to a previous release (requested or after a failed verify)",
            rollbacks.clone(),
        );
        registry.register(
            "status_conflicts",
            "Status writes refused with 409 because another writer changed the object first (each is retried on a fresh read)",
            conflicts.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            switches,
            rollbacks,
            conflicts,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, seconds: f64) {
        self.reconciles.inc();
        self.duration.observe(seconds);
    }

    pub fn failed(&self, kind: &str) {
        self.failures
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
    }

    pub fn switched(&self) {
        self.switches.inc();
    }

    pub fn rolled_back(&self) {
        self.rollbacks.inc();
    }

    pub fn conflicted(&self) {
        self.conflicts.inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
