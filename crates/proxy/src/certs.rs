//! Each TLS route's certificate, kept: the last good pair is copied into
//! the proxy's home (`certs/`, mode 0600), and a renewal in place is picked
//! up within `--cert-check-interval` (30 s) or at once on `cyan proxy
//! reload`.
//!
//! A route names its PEM files by path, and those files move: a CI job
//! deploys from a workspace that is cleaned after it, a renewal rewrites
//! them in place. Loading them again at every table change (as this proxy
//! once did) made an app's TLS fail on any other app's change, or on a
//! restart, once its files were gone; and a renewed certificate was served
//! only after some unrelated change. So the table takes certificates from
//! here, where a pair is replaced only by a newer pair that loads.
//!
//! A route with `tls: acme` has no files of its own: `acme` puts each
//! certificate it obtains here (`put_acme`), kept in `<home>/acme/`, and a
//! restarted proxy serves the kept one at once.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use super::state::{TlsFiles, TlsSource};
use super::tls;

/// Checks the routes' files for a renewal every `every`, until `stop`.
pub fn spawn_refresh(
    router: Arc<super::router::Router>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => { router.reload_certs(); }
            }
        }
    });
}

/// The certificates in use, by route.
pub struct CertStore {
    /// `<home>/certs`: the kept copies.
    dir: PathBuf,
    /// `<home>/acme`: the certificates ACME issued, one file per route.
    acme_dir: PathBuf,
    by_route: HashMap<String, Kept>,
}

struct Kept {
    key: Arc<CertifiedKey>,
    /// The route's files as they were when loaded (`None`: from the copy,
    /// or ACME's).
    stamp: Option<Stamp>,
    source: TlsSource,
    /// Why the route's files, as they are now, are not served (they
    /// changed into a pair that does not load).
    refused: Option<String>,
}

/// What a check of the routes' files found.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Routes now serving a renewed pair.
    pub renewed: Vec<String>,
    /// Routes whose files changed into a pair that does not load (route,
    /// why): they still serve their last good pair.
    pub refused: Vec<(String, String)>,
}

/// The TLS routes' files as loaded (`CertStore::watched`).
pub struct Watched(Vec<(String, TlsFiles, Option<Stamp>)>);

impl Watched {
    /// The routes whose files differ now from when they were loaded.
    pub fn changed(self) -> Vec<(String, TlsFiles)> {
        let differs = |(_, files, was): &(String, TlsFiles, Option<Stamp>)| {
            let now = Stamp::of(files);
            now.is_some() && now != *was
        };
        let changed = self.0.into_iter().filter(differs);
        changed.map(|(route, files, _)| (route, files)).collect()
    }
}

/// What tells a changed file: its length and modification time, for the
/// certificate and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp([(u64, Option<SystemTime>); 2]);

impl Stamp {
    fn of(files: &TlsFiles) -> Option<Stamp> {
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.len(), m.modified().ok()))
        };
        Some(Stamp([one(&files.cert)?, one(&files.key)?]))
    }
}

impl CertStore {
    pub fn new(dir: PathBuf) -> CertStore {
        CertStore {
            acme_dir: dir.with_file_name("acme"),
            dir,
            by_route: HashMap::new(),
        }
    }

    /// The certificate a route serves, if it has one.
    pub fn get(&self, route: &str) -> Option<Arc<CertifiedKey>> {
        self.by_route.get(route).map(|k| k.key.clone())
    }

    /// A route's (new) files, as the admin API puts them: they must load.
    /// On success they are kept (copied) and served. Files the route
    /// serves already, unchanged since (same paths, length and
    /// modification time), are not read again: every deploy puts its
    /// route, and a host with thousands of TLS apps would otherwise parse
    /// and copy a certificate per deploy of any of them.
    pub fn put(&mut self, route: &str, files: &TlsFiles) -> Result<(), String> {
        let stamp = Stamp::of(files);
        let source = TlsSource::Files(files.clone());
        let unchanged = |k: &Kept| k.source == source && k.stamp.is_some() && k.stamp == stamp;
        if self.by_route.get(route).is_some_and(unchanged) {
            return Ok(());
        }
        let key = tls::load(files)?;
        self.keep_copy(route, files);
        self.by_route.insert(
            route.to_string(),
            Kept {
                key,
                stamp,
                source,
                refused: None,
            },
        );
        Ok(())
    }

    /// Do `files` load, for `route` about to name them? What the route
    /// serves changes only when they are the very files it serves,
    /// renewed in place since: they are served now, and `true` says so.
    /// Other files are loaded (and kept) once the route names them
    /// (`sync_route`): a claim that is then refused must not change what
    /// is served, nor which files are watched for renewal.
    pub fn check(&mut self, route: &str, files: &TlsFiles) -> Result<bool, String> {
        let source = TlsSource::Files(files.clone());
        match self.by_route.get(route) {
            Some(k) if k.source == source && k.stamp.is_some() && k.stamp == Stamp::of(files) => {
                Ok(false)
            }
            Some(k) if k.source == source => self.put(route, files).map(|()| true),
            _ => tls::load(files).map(|_| false),
        }
    }

    /// A route's certificate chain and key (PEM, in one text) that `acme`
    /// obtained: kept in `<home>/acme/<route>.pem` (mode 0600; one rename
    /// replaces chain and key together) and served, if it loads. Until then
    /// the route's last certificate stays.
    pub fn put_acme(&mut self, route: &str, pem: &[u8]) -> Result<(), String> {
        let file = self.acme_file(route);
        let new = file.with_extension("pem.new");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.acme_dir)
            .and_then(|()| write_private(&new, pem))
            .map_err(|e| format!("cannot keep {}: {e}", new.display()))?;
        let key = match tls::load(&one_file(&new)) {
            Ok(key) => key,
            Err(e) => {
                let _ = std::fs::remove_file(&new);
                return Err(e);
            }
        };
        std::fs::rename(&new, &file).map_err(|e| format!("cannot keep {}: {e}", file.display()))?;
        self.serve_acme(route, key);
        Ok(())
    }

    fn serve_acme(&mut self, route: &str, key: Arc<CertifiedKey>) {
        let kept = Kept {
            key,
            stamp: None,
            source: TlsSource::Acme,
            refused: None,
        };
        self.by_route.insert(route.to_string(), kept);
    }

    /// Where a route's ACME certificate is kept.
    pub fn acme_file(&self, route: &str) -> PathBuf {
        self.acme_dir.join(format!("{route}.pem"))
    }

    /// An ACME route's kept certificate, if it has one that loads.
    fn load_acme(&mut self, route: &str) {
        let file = self.acme_file(route);
        if !file.exists() {
            return tracing::debug!(%route, "no ACME certificate yet");
        }
        match tls::load(&one_file(&file)) {
            Ok(key) => self.serve_acme(route, key),
            Err(e) => tracing::warn!(%route, error = %e, "the kept ACME certificate does not load"),
        }
    }

    /// Makes the store match one route: a TLS route gets its pair, from
    /// its files or else from the kept copy (a restarted proxy whose
    /// routes' files are gone); a route without TLS (or gone) loses its.
    /// A pair kept for the same source is not loaded again.
    pub fn sync_route(&mut self, route: &str, source: Option<&TlsSource>) {
        let Some(source) = source else {
            self.by_route.remove(route);
            return;
        };
        if self
            .by_route
            .get(route)
            .is_some_and(|k| &k.source == source)
        {
            return;
        }
        self.by_route.remove(route);
        let files = match source {
            TlsSource::Files(files) => files,
            TlsSource::Acme => return self.load_acme(route),
        };
        if self.put(route, files).is_ok() {
            return;
        }
        match self.load_copy(route) {
            Ok(key) => {
                tracing::warn!(%route, cert = %files.cert.display(), "TLS files unreadable; serving the kept copy");
                self.by_route.insert(
                    route.to_string(),
                    Kept {
                        key,
                        stamp: None,
                        source: source.clone(),
                        refused: None,
                    },
                );
            }
            Err(e) => tracing::error!(%route, error = %e, "no certificate to serve"),
        }
    }

    /// Each route's files and how they were when loaded, to look at
    /// without the store (`changed`): a look at thousands of files is not
    /// made under the router's lock.
    pub fn watched(&self) -> Watched {
        let files = self.by_route.iter().filter_map(|(r, k)| {
            // ACME's certificates are renewed by `acme`, not in place.
            let TlsSource::Files(files) = &k.source else {
                return None;
            };
            Some((r.clone(), files.clone(), k.stamp.clone()))
        });
        Watched(files.collect())
    }

    /// Loads again the routes whose files `changed` (or that serve their
    /// kept copy and whose files are back), if they still name them. A
    /// pair that does not load is logged and the last good one stays.
    pub fn renew(&mut self, changed: Vec<(String, TlsFiles)>) -> Refreshed {
        let mut out = Refreshed::default();
        for (route, files) in changed {
            let same = TlsSource::Files(files.clone());
            if self.by_route.get(&route).is_none_or(|k| k.source != same) {
                continue;
            }
            match self.put(&route, &files) {
                Ok(()) => out.renewed.push(route),
                Err(e) => {
                    tracing::warn!(%route, error = %e, "renewed TLS files do not load; serving the last good pair");
                    if let Some(k) = self.by_route.get_mut(&route) {
                        // Not tried again until they change once more.
                        k.stamp = Stamp::of(&files);
                        k.refused = Some(e);
                    }
                }
            }
        }
        out.refused = self
            .by_route
            .iter()
            .filter_map(|(r, k)| Some((r.clone(), k.refused.clone()?)))
            .collect();
        out.refused.sort();
        out
    }

    fn copy_paths(&self, route: &str) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join(format!("{route}.crt")),
            key: self.dir.join(format!("{route}.key")),
        }
    }

    fn load_copy(&self, route: &str) -> Result<Arc<CertifiedKey>, String> {
        tls::load(&self.copy_paths(route))
    }

    /// Copies a pair that loaded into the home, readable by its owner only,
    /// each file replaced atomically.
    fn keep_copy(&self, route: &str, files: &TlsFiles) {
        let to = self.copy_paths(route);
        let copied = std::fs::create_dir_all(&self.dir)
            .and_then(|()| copy_private(&files.cert, &to.cert))
            .and_then(|()| copy_private(&files.key, &to.key));
        if let Err(e) = copied {
            tracing::warn!(%route, error = %e, "cannot keep a copy of the TLS files");
        }
    }
}

/// Chain and key in one PEM file.
fn one_file(file: &Path) -> TlsFiles {
    TlsFiles {
        cert: file.to_path_buf(),
        key: file.to_path_buf(),
    }
}

fn copy_private(from: &Path, to: &Path) -> std::io::Result<()> {
    write_private(to, &std::fs::read(from)?)
}

/// Replaces `to` atomically with `bytes`, readable by its owner only.
pub(crate) fn write_private(to: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = to.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, to)
}
