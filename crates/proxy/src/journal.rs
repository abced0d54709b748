//! Where the proxy's state lives on disk: a snapshot and an append-only
//! journal of the routes that changed since, so a change costs what the
//! change is, not what the whole host is.
//!
//! Rewriting one whole state file per change (as this proxy once did) made
//! every switch cost O(apps): at 1,000 apps a lease renewal alone wrote and
//! fsynced 600 KB. Now:
//!
//! - `proxy.json` is a snapshot: every route, and `seq`, the last journal
//!   record it holds. Written whole (temp file, fsync, rename, fsync of
//!   the folder), so it is the old one or the new one, never half. A
//!   snapshot without `seq` was written by a cyan from before the journal
//!   (which wrote every change into it, after a downgrade): it outranks
//!   any journal beside it.
//! - `proxy.journal` holds one JSON line per change since: `{"seq": n,
//!   "routes": {name: state, or null when removed}}`, appended and
//!   `fdatasync`ed before the admin API answers. A change to several
//!   routes at once (a container moved) is one line, so it is kept whole
//!   or not at all.
//! - Compaction: once the journal outgrows the snapshot (and 1 MiB), it is
//!   sealed (`proxy.journal.sealed`: one rename) and a fresh one started,
//!   under the caller's lock; a thread of its own then writes the state as
//!   it was at the seal (an `imbl` map: the copy costs nothing) as the new
//!   snapshot and deletes the sealed part. A switch never waits on it.
//! - Restore: the snapshot, then the sealed part and the journal, skipping
//!   records the snapshot already holds (a crash between the new snapshot
//!   and the sealed part's deletion). A record cut short at the end is a
//!   write that was never acknowledged (its fsync had not returned): it is
//!   dropped. An unreadable record before the end is not a torn write, and
//!   the proxy refuses to start rather than lose what follows it. Then the
//!   whole state is written as a snapshot and the journal starts empty, so
//!   a proxy starts from one file; if that cannot be written (a full
//!   disk), the proxy serves what it read and appends after the journal's
//!   last whole record.
//! - A proxy that stops, or hands over to `cyan proxy upgrade`'s
//!   successor, leaves one snapshot and an empty journal (`Router::freeze`):
//!   what any cyan, older ones included, reads.
//!
//! The costs, measured by `bench/scale`, are in bench/README.md.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{ProxyState, RouteState};

/// A journal is compacted once it is this large, or larger than the
/// snapshot, whichever is more.
const COMPACT_AT_LEAST: u64 = 1 << 20;

/// The snapshot file's shape.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// The last journal record the snapshot holds. None: written by a cyan
    /// from before the journal (a downgrade's proxy), which wrote every
    /// change into it: a journal beside it is older, and not replayed.
    #[serde(default)]
    seq: Option<u64>,
    #[serde(flatten)]
    state: ProxyState,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    seq: u64,
    routes: &'a BTreeMap<String, Option<RouteState>>,
}

#[derive(Deserialize)]
struct RecordIn {
    seq: u64,
    routes: BTreeMap<String, Option<RouteState>>,
}

/// The open journal of one state file.
pub struct Journal {
    snapshot: PathBuf,
    file: File,
    /// The last record written.
    seq: u64,
    /// The journal's length, and the snapshot's when last written (by
    /// the compaction's thread too).
    bytes: u64,
    snapshot_bytes: Arc<AtomicU64>,
    /// The last append failed: the file may end in part of it.
    torn: bool,
    /// The thread writing a snapshot, if one is: it owns the sealed part.
    compacting: Option<std::thread::JoinHandle<()>>,
}

impl Journal {
    /// Reads the state at `snapshot` (`<home>/proxy.json`) and its journal,
    /// writes it back as one snapshot, and opens an empty journal.
    ///
    /// Errors: a file that cannot be read or written, a snapshot that is
    /// not JSON, or a journal record that cannot be read before its last
    /// (`InvalidData`, naming the file and line).
    pub fn open(snapshot: &Path) -> std::io::Result<(Journal, ProxyState)> {
        let found = read_at(snapshot)?;
        let mut journal = Journal {
            snapshot: snapshot.to_path_buf(),
            file: File::open(dir_of(snapshot))?,
            seq: found.seq,
            bytes: 0,
            snapshot_bytes: Arc::new(AtomicU64::new(0)),
            torn: false,
            compacting: None,
        };
        if let Err(e) = journal.rewrite(&found.state) {
            // A full disk must not keep every app down: serve what was
            // read, and append after the journal's last whole record.
            tracing::warn!(error = %e, "cannot write a fresh snapshot; going on with the journal as it is");
            journal.file = open_append(&journal_path(snapshot))?;
            journal.file.set_len(found.journal_whole)?;
            journal.bytes = found.journal_whole;
            journal
                .snapshot_bytes
                .store(estimate(&found.state), Relaxed);
        }
        Ok((journal, found.state))
    }

    /// Appends one change (each route's new state, `None` when removed)
    /// and waits until it is on disk. On error the change must be undone
    /// by the caller; the journal's tail may hold a torn record, which a
    /// restore drops and the next write follows on a line of its own.
    pub fn append(&mut self, routes: &BTreeMap<String, Option<RouteState>>) -> std::io::Result<()> {
        if self.torn {
            // A write that failed part-way: cut it off first, so it never
            // sits before a whole record.
            self.file.set_len(self.bytes)?;
            self.torn = false;
        }
        let seq = self.seq + 1;
        let mut line = serde_json::to_vec(&RecordOut { seq, routes }).expect("state serializes");
        line.push(b'\n');
        if let Err(e) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            self.torn = true;
            return Err(e);
        }
        self.seq = seq;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Starts a compaction when the journal has outgrown the snapshot and
    /// none is running: the journal is sealed and a fresh one opened here
    /// (an error leaves the journal as it was, to try again later), and
    /// `state` (the state after the last record, a cheap copy) is written
    /// as the snapshot by a thread of its own.
    pub fn compact_if_due(&mut self, state: &ProxyState) {
        let due = self.bytes > self.snapshot_bytes.load(Relaxed).max(COMPACT_AT_LEAST);
        if !due || self.compacting.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.settle();
        let sealed = sealed_path(&self.snapshot);
        if sealed.exists() {
            // The last compaction failed; its part stays until a restart
            // compacts everything.
            return;
        }
        let fresh = std::fs::rename(journal_path(&self.snapshot), &sealed)
            .and_then(|()| open_append(&journal_path(&self.snapshot)))
            .and_then(|file| sync_dir(&self.snapshot).map(|()| file));
        let file = match fresh {
            Ok(file) => file,
            Err(e) => {
                // The journal is back under its name, or still is: a
                // restore replays both parts either way.
                let _ = std::fs::rename(&sealed, journal_path(&self.snapshot));
                return tracing::warn!(error = %e, "cannot seal the proxy's journal; compacting later");
            }
        };
        self.file = file;
        self.bytes = 0;
        let (state, seq, snapshot) = (state.clone(), self.seq, self.snapshot.clone());
        let size = self.snapshot_bytes.clone();
        self.compacting = Some(std::thread::spawn(move || {
            let written = write_snapshot(&snapshot, &state, seq)
                .map(|bytes| size.store(bytes, Relaxed))
                .and_then(|()| std::fs::remove_file(&sealed))
                .and_then(|()| sync_dir(&snapshot));
            if let Err(e) = written {
                tracing::warn!(error = %e, "cannot compact the proxy's journal; the next start will");
            }
        }));
    }

    /// Waits for a compaction in progress: after it, the files on disk
    /// change only with the next change (a successor reads them now).
    pub fn settle(&mut self) {
        if let Some(t) = self.compacting.take() {
            let _ = t.join();
        }
    }

    /// Writes `state` as the snapshot and starts an empty journal: at
    /// open, and when changes stop or start again around a stop or a
    /// handover (`Router::freeze`).
    pub fn rewrite(&mut self, state: &ProxyState) -> std::io::Result<()> {
        self.settle();
        let (file, size) = start_over(&self.snapshot, state, self.seq)?;
        self.file = file;
        self.snapshot_bytes.store(size, Relaxed);
        self.bytes = 0;
        self.torn = false;
        Ok(())
    }
}

/// Writes `state` (through record `seq`) as the snapshot, then empties the
/// journal and deletes a sealed part, which it holds; returns the journal
/// opened for appending and the snapshot's size.
fn start_over(snapshot: &Path, state: &ProxyState, seq: u64) -> std::io::Result<(File, u64)> {
    let size = write_snapshot(snapshot, state, seq)?;
    let journal = journal_path(snapshot);
    // Emptied only once the snapshot holds all of it.
    File::create(&journal)?.sync_all()?;
    match std::fs::remove_file(sealed_path(snapshot)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    sync_dir(snapshot)?;
    Ok((open_append(&journal)?, size))
}

#[cfg(test)]
impl Journal {
    /// From now on every write fails, as on a full or failing disk.
    pub(crate) fn fail_writes(&mut self) {
        self.file = File::open(journal_path(&self.snapshot)).expect("the journal");
    }
}

/// The state kept at `snapshot` and its journal, read only (a running
/// proxy's files can be read so, with its last acknowledged changes).
/// Errors as `Journal::open`'s.
pub fn read(snapshot: &Path) -> std::io::Result<ProxyState> {
    read_at(snapshot).map(|found| found.state)
}

/// What a read of the files found: the state, the last record it holds,
/// and how much of the journal is whole records (a torn tail follows).
struct Found {
    state: ProxyState,
    seq: u64,
    journal_whole: u64,
}

/// The state and the last record it holds. A compaction that replaces
/// the snapshot while it is read (a running proxy's) may delete the
/// sealed part before it is read: the read is then made again.
fn read_at(snapshot: &Path) -> std::io::Result<Found> {
    let mut tries = 0;
    loop {
        let before = identity(snapshot);
        let found = read_once(snapshot)?;
        tries += 1;
        if identity(snapshot) == before || tries == 3 {
            return Ok(found);
        }
    }
}

/// Which file the snapshot is now: a compaction's rename makes another.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn read_once(snapshot: &Path) -> std::io::Result<Found> {
    let (mut state, held) = match read_snapshot(snapshot)? {
        Some(s) => (s.state, s.seq),
        None => (ProxyState::default(), Some(0)),
    };
    let Some(held) = held else {
        for part in [sealed_path(snapshot), journal_path(snapshot)] {
            if part.exists() {
                tracing::warn!(journal = %part.display(), "the state file was written by an older cyan; the journal beside it is older and not replayed");
            }
        }
        return Ok(Found {
            state,
            seq: 0,
            journal_whole: 0,
        });
    };
    let mut seq = held;
    replay(&sealed_path(snapshot), held, &mut state, &mut seq)?;
    let journal_whole = replay(&journal_path(snapshot), held, &mut state, &mut seq)?;
    Ok(Found {
        state,
        seq,
        journal_whole,
    })
}

/// `<home>/proxy.journal`, beside the snapshot.
pub fn journal_path(snapshot: &Path) -> PathBuf {
    snapshot.with_extension("journal")
}

fn sealed_path(snapshot: &Path) -> PathBuf {
    snapshot.with_extension("journal.sealed")
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(dir_of(path))?.sync_all()
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// A snapshot's size, near enough to pace compactions until one is
/// written and says.
fn estimate(state: &ProxyState) -> u64 {
    // About what one route with two colors and a record takes.
    state.routes.len() as u64 * 700
}

fn read_snapshot(path: &Path) -> std::io::Result<Option<Snapshot>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("corrupt state file {}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the snapshot atomically; returns its size.
fn write_snapshot(path: &Path, state: &ProxyState, seq: u64) -> std::io::Result<u64> {
    #[derive(Serialize)]
    struct Out<'a> {
        seq: u64,
        #[serde(flatten)]
        state: &'a ProxyState,
    }
    let bytes = serde_json::to_vec(&Out { seq, state }).expect("state serializes");
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(bytes.len() as u64)
}

/// Applies the records of one journal part newer than `held` to `state`;
/// returns the length of its whole records. A last line without its
/// newline, or that is not a record, is a write cut short: never
/// acknowledged (the append had not returned), so dropped.
fn replay(part: &Path, held: u64, state: &mut ProxyState, seq: &mut u64) -> std::io::Result<u64> {
    let bytes = match std::fs::read(part) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut whole = 0u64;
    let mut lines = bytes
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
        .peekable();
    while let Some((n, line)) = lines.next() {
        let last = lines.peek().is_none();
        let torn = || tracing::warn!(journal = %part.display(), line = n + 1, "dropping a record cut short by a crash");
        let Some(text) = line.strip_suffix(b"\n") else {
            torn();
            break;
        };
        let record = match text {
            [] => None,
            _ => match serde_json::from_slice::<RecordIn>(text) {
                Ok(r) => Some(r),
                Err(_) if last => {
                    torn();
                    break;
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "corrupt journal {} at line {}: {e}; records follow it, so it is not a torn write",
                            part.display(),
                            n + 1
                        ),
                    ))
                }
            },
        };
        whole += line.len() as u64;
        let Some(record) = record.filter(|r| r.seq > held) else {
            continue;
        };
        for (name, route) in record.routes {
            match route {
                Some(r) => state.routes.insert(name, r),
                None => state.routes.remove(&name),
            };
        }
        *seq = (*seq).max(record.seq);
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cyan_plan::release::Color;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cyan-journal-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("proxy.json")
    }

    fn route(n: u64) -> RouteState {
        RouteState {
            hosts: vec![format!("app{n}.localhost")],
            live: Some(Color::Blue),
            record: serde_json::json!({ "n": n }),
            ..RouteState::default()
        }
    }

    fn one(name: &str, r: Option<RouteState>) -> BTreeMap<String, Option<RouteState>> {
        BTreeMap::from([(name.to_string(), r)])
    }

    #[test]
    fn every_appended_change_is_restored_and_the_start_leaves_one_file() {
        let path = scratch("restore");
        let (mut j, mut state) = Journal::open(&path).unwrap();
        for n in 0..50 {
            let name = format!("app{}", n % 7);
            let r = route(n);
            j.append(&one(&name, Some(r.clone()))).unwrap();
            state.routes.insert(name, r);
        }
        j.append(&one("app3", None)).unwrap();
        state.routes.remove("app3");
        drop(j);
        let (_, again) = Journal::open(&path).unwrap();
        assert_eq!(again, state);
        assert_eq!(
            std::fs::metadata(journal_path(&path)).unwrap().len(),
            0,
            "the start wrote one snapshot"
        );
        let (_, third) = Journal::open(&path).unwrap();
        assert_eq!(third, state);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_one_before_the_end_is_refused() {
        let path = scratch("torn");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&one("a", Some(route(1)))).unwrap();
        j.append(&one("b", Some(route(2)))).unwrap();
        drop(j);
        let mut f = open_append(&journal_path(&path)).unwrap();
        f.write_all(br#"{"seq":3,"routes":{"c":{"hos"#).unwrap();
        let (mut j, state) = Journal::open(&path).unwrap();
        assert_eq!(state.routes.keys().collect::<Vec<_>>(), ["a", "b"]);
        // The next write after a restart is whole.
        j.append(&one("c", Some(route(3)))).unwrap();
        drop(j);
        let (_, state) = Journal::open(&path).unwrap();
        assert_eq!(state.routes.len(), 3);

        // Garbage followed by a record: not a torn write.
        let mut f = open_append(&journal_path(&path)).unwrap();
        f.write_all(b"{garbage\n").unwrap();
        f.write_all(br#"{"seq":9,"routes":{"d":null}}"#).unwrap();
        f.write_all(b"\n").unwrap();
        let e = Journal::open(&path).err().expect("refused");
        assert!(e.to_string().contains("at line 1"), "{e}");
    }

    #[test]
    fn a_compaction_keeps_every_change_and_a_crash_at_any_step_restores_them() {
        let path = scratch("compact");
        let (mut j, mut state) = Journal::open(&path).unwrap();
        let big = "x".repeat(4096);
        let mut sealed_once = false;
        for n in 0..600 {
            let name = format!("app{}", n % 40);
            let mut r = route(n);
            r.record = serde_json::json!({ "n": n, "pad": big });
            j.append(&one(&name, Some(r.clone()))).unwrap();
            state.routes.insert(name, r);
            j.compact_if_due(&state);
            sealed_once |= j.compacting.is_some();
        }
        assert!(sealed_once, "2.4 MB of journal compacted at least once");
        j.settle();
        assert!(!sealed_path(&path).exists(), "the sealed part is deleted");
        assert_eq!(
            j.snapshot_bytes.load(Relaxed),
            std::fs::metadata(&path).unwrap().len(),
            "the next compaction is paced on the snapshot's real size"
        );
        assert!(std::fs::metadata(journal_path(&path)).unwrap().len() < 1 << 21);
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1, state);

        // A crash after the seal, before the snapshot: both parts replay.
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&one("late", Some(route(1000)))).unwrap();
        std::fs::rename(journal_path(&path), sealed_path(&path)).unwrap();
        j.file = open_append(&journal_path(&path)).unwrap();
        j.append(&one("later", Some(route(1001)))).unwrap();
        state.routes.insert("late".into(), route(1000));
        state.routes.insert("later".into(), route(1001));
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1, state);

        // A crash after the new snapshot, before the sealed part went:
        // its records are older than the snapshot, and skipped.
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&one("late", None)).unwrap();
        std::fs::copy(journal_path(&path), sealed_path(&path)).unwrap();
        state.routes.remove("late");
        j.rewrite(&state).unwrap();
        std::fs::write(
            sealed_path(&path),
            br#"{"seq":1,"routes":{"late":{"hosts":["stale"]}}}
"#,
        )
        .unwrap();
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1, state);
    }

    #[test]
    fn a_start_that_cannot_write_a_snapshot_goes_on_after_the_last_whole_record() {
        let path = scratch("full");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&one("a", Some(route(1)))).unwrap();
        drop(j);
        let mut f = open_append(&journal_path(&path)).unwrap();
        f.write_all(br#"{"seq":2,"routes":{"b":nu"#).unwrap();
        // The snapshot's temp file cannot be made, as on a full disk.
        std::fs::create_dir(path.with_extension("json.tmp")).unwrap();
        let (mut j, state) = Journal::open(&path).expect("serves what it read");
        assert_eq!(state.routes.keys().collect::<Vec<_>>(), ["a"]);
        j.append(&one("c", Some(route(3)))).unwrap();
        drop(j);
        std::fs::remove_dir(path.with_extension("json.tmp")).unwrap();
        let (_, state) = Journal::open(&path).unwrap();
        assert_eq!(state.routes.keys().collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn a_state_file_of_an_older_cyan_outranks_a_journal_beside_it() {
        // A downgrade: the older proxy wrote every change into proxy.json
        // (no `seq`) and never read the journal left beside it.
        let path = scratch("downgrade");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&one("stale", Some(route(1)))).unwrap();
        drop(j);
        std::fs::write(
            &path,
            br#"{"routes": {"now": {"hosts": ["now.localhost"]}}}"#,
        )
        .unwrap();
        let (_, state) = Journal::open(&path).unwrap();
        assert_eq!(state.routes.keys().collect::<Vec<_>>(), ["now"]);
    }

    #[test]
    fn an_older_state_file_is_a_snapshot() {
        let path = scratch("older");
        std::fs::write(
            &path,
            br#"{"routes": {"web": {"hosts": ["web.localhost"], "live": "blue"}}}"#,
        )
        .unwrap();
        let (_, state) = Journal::open(&path).unwrap();
        assert_eq!(state.routes["web"].hosts, ["web.localhost"]);
    }
}
