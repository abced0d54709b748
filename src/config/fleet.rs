//! `hosts:` and `fleet:`: the Docker hosts one app runs on, each with its
//! own cyan proxy behind the user's load balancer, and how a deploy moves
//! them (`crate::fleet`).
//!
//! A host is reached over SSH, as `docker -H ssh://` reaches it: the
//! user's own `ssh` with its agent, config and known hosts, or the files
//! named here. Nothing here holds a credential; only paths to them.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer, Serialize};

/// One Docker host of the fleet, as written: `ssh://[user@]host[:port]`,
/// or `{ name, url }` to give it a shorter name in messages and `--hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostEntry {
    /// How the host is called in messages, reports and `--hosts`: the
    /// `name:` given, else the URL's host part.
    pub name: String,
    pub url: SshUrl,
}

impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            name: String,
            url: String,
        }
        /// A URL, or a mapping with its own errors (an unknown or missing
        /// key named), where an untagged enum said only "no variant".
        struct Written;
        impl<'de> de::Visitor<'de> for Written {
            type Value = (Option<String>, String);
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("ssh://[user@]host[:port], or { name: NAME, url: ssh://… }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok((None, v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let n = Named::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok((Some(n.name), n.url))
            }
        }
        let (name, url) = d.deserialize_any(Written)?;
        let url = SshUrl::parse(&url).map_err(de::Error::custom)?;
        let name = name.unwrap_or_else(|| url.host.clone());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            || name.starts_with('-')
        {
            return Err(de::Error::custom(format!(
                "invalid host name {name:?}: letters, digits, '-', '_', '.' and ':' only"
            )));
        }
        Ok(HostEntry { name, url })
    }
}

/// `ssh://[user@]host[:port]`: where the host's Docker engine and cyan
/// proxy are reached, through one SSH connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshUrl {
    /// Parses `ssh://[user@]host[:port]` (an IPv6 host in brackets).
    ///
    /// Errors name what is wrong: another scheme (`tcp://` is refused with
    /// why), a path, an empty host, a user or host that `ssh` would read
    /// as an option.
    pub fn parse(s: &str) -> Result<SshUrl, String> {
        let Some(rest) = s.strip_prefix("ssh://") else {
            if s.starts_with("tcp://") || s.starts_with("https://") {
                return Err(format!(
                    "host {s:?}: only ssh:// hosts are supported. A TCP engine endpoint would also need the \
                     host's cyan proxy admin API on the network; over SSH both go through one \
                     authenticated connection. Write ssh://user@host"
                ));
            }
            return Err(format!("host {s:?}: write it as ssh://[user@]host[:port]"));
        };
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(format!(
                "host {s:?}: no path: write ssh://[user@]host[:port]"
            ));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, _)) if u.contains(':') => {
                return Err(format!(
                    "host {:?}: no password in a host's URL (it would be printed and logged): use a key (fleet.ssh.identity_file, or your ssh agent)",
                    format!("ssh://{}:…@{}", u.split(':').next().unwrap_or(""), rest.rsplit_once('@').map_or("", |(_, h)| h))
                ));
            }
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        if !hostport.starts_with('[') && hostport.matches(':').count() > 1 {
            return Err(format!(
                "host {s:?}: an IPv6 address goes in brackets: ssh://[{hostport}] (or ssh://[addr]:port)"
            ));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("host {s:?}: an unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("host {s:?}: junk after ']'"))?,
                ),
            };
            (h.to_string(), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("host {s:?}: port {p:?} is not a port number"))
            })
            .transpose()?;
        let bad = |part: &str| {
            part.is_empty()
                || part.starts_with('-')
                || part.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if bad(&host) {
            return Err(format!("host {s:?}: no usable host name"));
        }
        if user.as_deref().is_some_and(bad) {
            return Err(format!("host {s:?}: no usable user name"));
        }
        Ok(SshUrl { user, host, port })
    }

    /// `user@host` (or `host`), as `ssh` takes its destination.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for SshUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ssh://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl Serialize for SshUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a deploy moves the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every host gates its candidate, then every host switches at nearly
    /// the same moment: the fleet answers with one version or the other.
    #[default]
    Together,
    /// `batch` hosts at a time, each taken out of the load balancer first
    /// (its `/cyan/up` answers 503 for `drain_wait`), switched, put back,
    /// and its previous release stopped once the new one is verified: the
    /// load balancer is never sent to a host serving two versions, and
    /// each host runs one version again before the next batch.
    Rolling,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    #[serde(default)]
    pub strategy: Strategy,
    /// Hosts taken at a time by `strategy: rolling`.
    #[serde(default = "one")]
    pub batch: NonZeroU32,
    /// `strategy: rolling`: how long the load balancer gets to see a
    /// host's `/cyan/up` change (out before its switch, back in after),
    /// e.g. its health check's interval times its `fall`.
    #[serde(default = "default_drain_wait")]
    pub drain_wait: super::Dur,
    /// Hosts worked on at once while preparing (connect, ship the image,
    /// start and gate the candidate).
    #[serde(default = "four")]
    pub parallel: NonZeroU32,
    /// The cyan proxy's home on every host (its state and admin socket).
    #[serde(default = "default_home")]
    pub home: PathBuf,
    #[serde(default)]
    pub ssh: SshConfig,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            strategy: Strategy::default(),
            batch: one(),
            drain_wait: default_drain_wait(),
            parallel: four(),
            home: default_home(),
            ssh: SshConfig::default(),
        }
    }
}

/// What `ssh` is given beyond the user's own config and agent. Paths are
/// relative to cyan.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// A private key file (`ssh -i`); without it, the agent and
    /// `~/.ssh/config` decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// A known-hosts file checked instead of `~/.ssh/known_hosts`, strictly:
    /// an unknown or changed host key is refused. Without it, your ssh
    /// config decides (cyan never answers a prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<PathBuf>,
    /// An ssh config file read instead of `~/.ssh/config` (`ssh -F`): jump
    /// hosts, a `ProxyCommand`, per-host users and keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Seconds `ssh` waits for a host to answer (`ConnectTimeout`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u32,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            identity_file: None,
            known_hosts_file: None,
            config_file: None,
            connect_timeout: default_connect_timeout(),
        }
    }
}

fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}

fn default_drain_wait() -> super::Dur {
    super::Dur(std::time::Duration::from_secs(5))
}

fn four() -> NonZeroU32 {
    NonZeroU32::new(4).expect("4 is not 0")
}

fn default_home() -> PathBuf {
    PathBuf::from("/var/lib/cyan")
}

fn default_connect_timeout() -> u32 {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_are_read_and_bad_ones_say_why() {
        let u = SshUrl::parse("ssh://deploy@web1:2222").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.port),
            (Some("deploy"), "web1", Some(2222))
        );
        assert_eq!(u.destination(), "deploy@web1");
        assert_eq!(u.to_string(), "ssh://deploy@web1:2222");
        let v6 = SshUrl::parse("ssh://root@[fd00::2]:22").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::2", Some(22)));
        assert_eq!(v6.to_string(), "ssh://root@[fd00::2]:22");
        assert_eq!(SshUrl::parse("ssh://10.0.0.2").unwrap().user, None);
        for (bad, says) in [
            ("tcp://10.0.0.2:2376", "only ssh://"),
            ("web1", "ssh://[user@]host"),
            ("ssh://web1/var/run/docker.sock", "no path"),
            ("ssh://", "no usable host"),
            ("ssh://-oProxyCommand=x", "no usable host"),
            ("ssh://-oProxyCommand=x@web1", "no usable user"),
            ("ssh://web1:0", "not a port"),
            ("ssh://web1:99999", "not a port"),
            ("ssh://[fd00::2", "unclosed"),
            ("ssh://a b", "no usable host"),
        ] {
            let e = SshUrl::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
