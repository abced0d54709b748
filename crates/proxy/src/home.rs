//! The proxy's home: the folder that holds its admin socket, state file,
//! log and process lock, and the lock that makes a proxy its home's only
//! one.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The proxy's folder: admin socket, state file, log, process lock.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `--home`, else `$CYAN_HOME`, else `/var/lib/cyan` for root, else
    /// `$XDG_STATE_HOME/cyan` or `~/.local/state/cyan`; made absolute, so
    /// a relative `--home` names one folder wherever it is used from (a
    /// proxy started from another folder, a container's bind mount, the
    /// name of the home's proxy container).
    pub fn resolve(flag: Option<&Path>) -> Home {
        let dir = flag
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("CYAN_HOME").map(PathBuf::from))
            .unwrap_or_else(default_home);
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Home { dir }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("proxy.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("proxy.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }
    fn process_lock(&self) -> PathBuf {
        self.dir.join("proxy.lock")
    }
    /// Creates the folder, readable by its owner only.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }
}

fn default_home() -> PathBuf {
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/cyan");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("cyan");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/cyan")
}

/// Takes the home's process lock (`flock`), or says which home another
/// proxy already serves.
pub(crate) fn lock_process(home: &Home) -> Result<std::fs::File> {
    let lock_file = std::fs::File::create(home.process_lock())
        .map_err(|e| Error::Platform(format!("cannot open proxy lock: {e}")))?;
    if lock_file.try_lock().is_err() {
        return Err(Error::Refused(format!(
            "another cyan proxy is already running with home {}",
            home.dir.display()
        )));
    }
    Ok(lock_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_home_is_made_absolute() {
        let home = Home::resolve(Some(Path::new("-rel/home")));
        assert!(home.dir.is_absolute(), "{}", home.dir.display());
        assert_eq!(home.dir, std::env::current_dir().unwrap().join("-rel/home"));
        let given = Home::resolve(Some(Path::new("/srv/cyan")));
        assert_eq!(given.dir, Path::new("/srv/cyan"));
    }
}
