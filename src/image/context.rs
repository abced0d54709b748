//! The build context: a tar of the context folder minus what `.dockerignore`
//! leaves out. Headers are deterministic (fixed owner and time), so an
//! unchanged context hits the build cache.

use std::path::Path;

use super::dockerignore::DockerIgnore;
use crate::error::{Error, Result};

/// Tars `dir` for a build of `dockerfile` (relative to `dir`), with
/// `append` added as the Dockerfile's last line when given.
pub fn tar_context(dir: &Path, dockerfile: &str, append: Option<&str>) -> Result<Vec<u8>> {
    let ignore_text = std::fs::read_to_string(dir.join(".dockerignore")).unwrap_or_default();
    let ignore = DockerIgnore::parse(&ignore_text).map_err(Error::Config)?;
    if !dir.join(dockerfile).is_file() {
        return Err(Error::Config(format!(
            "no Dockerfile at {}: set build.context and build.dockerfile in cyan.yaml",
            dir.join(dockerfile).display()
        )));
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    let always = [dockerfile, ".dockerignore"];
    let read_error = |e: std::io::Error| {
        Error::Build(format!("cannot read build context {}: {e}", dir.display()))
    };
    add_dir(&mut tar, dir, "", &ignore, &always, dockerfile, append).map_err(read_error)?;
    tar.into_inner()
        .map_err(|e| Error::Build(format!("cannot finish build context: {e}")))
}

fn add_dir(
    tar: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    always: &[&str],
    dockerfile: &str,
    append: Option<&str>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type()?;
        if let Some(what) = special(&kind) {
            // Not a file a build can use (a proxy's admin socket when
            // CYAN_HOME is in the project): skipped, as Docker's own
            // archiver skips sockets, rather than failing the whole build.
            tracing::debug!(%path, what, "left out of the build context");
            continue;
        }
        let excluded = ignore.excludes(&path) && !always.contains(&path.as_str());
        if kind.is_dir() {
            // An excluded folder may still hold a re-included file.
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                tar.append_path_with_name(entry.path(), &path)?;
            }
            add_dir(tar, root, &path, ignore, always, dockerfile, append)?;
        } else if let (true, Some(line)) = (path == dockerfile, append) {
            let mut text = std::fs::read(entry.path())?;
            text.extend_from_slice(format!("\n{line}\n").as_bytes());
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&entry.metadata()?, tar::HeaderMode::Deterministic);
            header.set_size(text.len() as u64);
            tar.append_data(&mut header, &path, text.as_slice())?;
        } else if !excluded {
            tar.append_path_with_name(entry.path(), &path)?;
        }
    }
    Ok(())
}

/// What `kind` is when it is neither a file, a folder nor a symlink: a
/// socket, a FIFO or a device, none of which a tar of a build context can
/// carry usefully.
fn special(kind: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_socket() {
        Some("socket")
    } else if kind.is_fifo() {
        Some("fifo")
    } else if kind.is_block_device() || kind.is_char_device() {
        Some("device")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_honours_dockerignore_and_keeps_the_exec_bit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cyan-ctx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("target/debug")).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.join(".dockerignore"), "target\n*.md\nDockerfile\n").unwrap();
        std::fs::write(dir.join("app"), "bin").unwrap();
        std::fs::set_permissions(dir.join("app"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("README.md"), "x").unwrap();
        std::fs::write(dir.join("target/debug/big"), "x").unwrap();
        let bytes = tar_context(&dir, "Dockerfile", Some("LABEL a=\"1\"")).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "app" {
                assert_eq!(e.header().mode().unwrap() & 0o111, 0o111, "exec bit kept");
            }
            if name == "Dockerfile" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut e, &mut text).unwrap();
                assert_eq!(text, "FROM scratch\n\nLABEL a=\"1\"\n", "labels appended");
            }
            names.push(name);
        }
        assert_eq!(names, vec![".dockerignore", "Dockerfile", "app"]);
        // A socket and a FIFO (a proxy's home inside the project) are left
        // out; the build goes on.
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.join("home/proxy.sock")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("home/fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(dir.join("home/state.json"), "{}").unwrap();
        let bytes = tar_context(&dir, "Dockerfile", None).unwrap();
        let names: Vec<String> = tar::Archive::new(bytes.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"home/state.json".to_string()), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with("proxy.sock") || n.ends_with("fifo")),
            "{names:?}"
        );
        assert!(tar_context(&dir, "Nope", None)
            .unwrap_err()
            .to_string()
            .contains("no Dockerfile"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
