//! A simulated platform: observed states built like prose, and steps applied
//! to them the way a platform would.
//!
//! The planner's own tests walk it to show that deploys converge from any
//! crash point; the deployer's engine tests wrap it in a fake `Platform`
//! (feature `sim`), so the observe → plan → act loop is tested without
//! Docker. Test support only: nothing in a build of cyan uses it.

use std::collections::BTreeMap;

use crate::record::{DeployRecord, VerifyWindow};
use crate::release::{Color, ReleaseKey};
use crate::{Desired, ImageState, Intent, LockState, Observed, SetState, Step};

/// The release key of version `v` (one config hash for all).
pub fn key(v: &str) -> ReleaseKey {
    ReleaseKey {
        version: v.into(),
        config_hash: "c0ffee".into(),
    }
}

/// A deploy of version `v`: 2 replicas, built here, no push, no approval,
/// the previous color kept hot.
pub fn deploy(v: &str) -> Desired {
    Desired {
        intent: Intent::Deploy,
        target: key(v),
        replicas: 2,
        preview_replicas: None,
        build: true,
        push: false,
        require_approval: false,
        keep_hot: true,
        retire_delay_ms: 0,
    }
}

/// A rollback to version `v`: like [`deploy`], but never builds.
pub fn rollback_to(v: &str) -> Desired {
    Desired {
        intent: Intent::Rollback,
        build: false,
        ..deploy(v)
    }
}

/// A set of `n` running containers of version `v`.
pub fn running(v: &str, n: u32) -> SetState {
    SetState {
        release: Some(key(v)),
        total: n,
        running: n,
        ..SetState::default()
    }
}

/// A fluent observed state: `world().live(Blue, "1").built()`.
#[derive(Clone)]
pub struct World(pub Observed);

/// An empty platform: no image, no sets, the lock ours, the clock at 1s.
pub fn world() -> World {
    World(Observed {
        image: ImageState::Missing,
        live: None,
        sets: BTreeMap::new(),
        record: DeployRecord::default(),
        lock: LockState::Ours,
        now_ms: 1_000,
        drift: Vec::new(),
        progress_due_ms: None,
        auto_promote_due_ms: None,
    })
}

impl World {
    /// The target's image is on this host.
    pub fn built(mut self) -> Self {
        self.0.image = ImageState::Local;
        self
    }
    /// The target's image is in its registry.
    pub fn pushed(mut self) -> Self {
        self.0.image = ImageState::Pushed;
        self
    }
    /// Color `c` holds set `s`.
    pub fn set(mut self, c: Color, s: SetState) -> Self {
        self.0.sets.insert(c, s);
        self
    }
    /// Color `c` passed its gate with version `v`.
    pub fn gated(mut self, c: Color, v: &str) -> Self {
        self.0.record.gated.insert(c, key(v));
        self
    }
    /// Color `c` serves version `v`: 2 running replicas, gated.
    pub fn live(mut self, c: Color, v: &str) -> Self {
        self.0.live = Some(c);
        self.set(c, running(v, 2)).gated(c, v)
    }
    /// A verify window is open on color `c` for version `v` until `until_ms`.
    pub fn verifying(mut self, c: Color, v: &str, until_ms: u64) -> Self {
        self.0.record.verify = Some(VerifyWindow {
            color: c,
            release: key(v),
            until_ms,
            deadline_ms: None,
        });
        self
    }
}

/// Applies a step the way a platform would, so a walk can be simulated.
/// A gate always passes and a verify always closes its window; a step no
/// walk takes (approval, repair, halt, an end) panics.
pub fn apply(d: &Desired, o: &mut Observed, step: &Step) {
    match step {
        Step::Build => o.image = ImageState::Local,
        Step::Push => o.image = ImageState::Pushed,
        Step::Clear(c) | Step::Retire(c) => {
            o.sets.remove(c);
            o.record.gated.remove(c);
        }
        Step::Launch(c) => {
            o.sets
                .insert(*c, running(&d.target.version, crate::replicas(d, o)));
        }
        Step::Gate(c) => {
            o.record.gated.insert(*c, d.target.clone());
        }
        Step::Switch(c) => o.live = Some(*c),
        Step::Verify(_) => o.record.verify = None,
        other => panic!("walk reached {other:?}"),
    }
}
