//! Thread-per-core serving: one single-threaded tokio runtime per core, each
//! accepting on (a duplicate of) every listening socket and keeping its
//! connections, their upstream connections and their tunnels on its own
//! thread. A request then never hops threads: no work stealing and no
//! cross-thread wake-ups, which on a busy 2-core host cost more than the
//! proxying itself (measured: one multi-threaded runtime served 0.84x of
//! nginx; see bench/README.md). Admin, metrics and checks stay on the main
//! runtime.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::Handle;

static COUNT: OnceLock<usize> = OnceLock::new();

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many serving threads there are (1 before `start`, e.g. in tests).
pub fn count() -> usize {
    COUNT.get().copied().unwrap_or(1)
}

/// This thread's serving index (0 off the serving threads).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// One `T` per serving thread, each on its own cache lines: what a request
/// writes (counters, round-robin positions, idle connections) stays on its
/// core instead of bouncing between cores on every request. Readers that
/// need the whole add the shards up.
pub struct PerThread<T> {
    shards: Box<[Padded<T>]>,
}

#[repr(align(64))]
struct Padded<T>(T);

impl<T: Default> Default for PerThread<T> {
    fn default() -> Self {
        PerThread {
            shards: (0..count()).map(|_| Padded(T::default())).collect(),
        }
    }
}

impl<T> PerThread<T> {
    /// This thread's shard, and its index for `get`.
    pub fn local(&self) -> (usize, &T) {
        let i = index() % self.shards.len();
        (i, &self.shards[i].0)
    }

    /// The shard `local` returned with index `i`.
    pub fn get(&self, i: usize) -> &T {
        &self.shards[i].0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|p| &p.0)
    }
}

/// Starts `n` serving threads (once per process) and returns their runtimes.
pub fn start(n: usize) -> std::io::Result<Vec<Handle>> {
    let n = *COUNT.get_or_init(|| n.max(1));
    (0..n)
        .map(|i| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("cyan-serve-{i}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(i));
                    // No process or signal driver: those belong to the main runtime.
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build();
                    match rt {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            rx.recv()
                .map_err(|_| std::io::Error::other("a serving thread died at start"))?
        })
        .collect()
}
