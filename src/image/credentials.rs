//! Registry credentials: from `CYAN_REGISTRY_USERNAME`/`CYAN_REGISTRY_PASSWORD`,
//! else from the Docker CLI's `config.json` (`$DOCKER_CONFIG` or `~/.docker`).
//! They go to the engine in the auth header only; nothing here logs them.

use base64::Engine;
use bollard::auth::DockerCredentials;

pub fn for_registry(registry: &str) -> Option<DockerCredentials> {
    if let (Ok(username), Ok(password)) = (
        std::env::var("CYAN_REGISTRY_USERNAME"),
        std::env::var("CYAN_REGISTRY_PASSWORD"),
    ) {
        return Some(DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(registry.to_string()),
            ..DockerCredentials::default()
        });
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    from_config_json(&text, registry)
}

fn from_config_json(text: &str, registry: &str) -> Option<DockerCredentials> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = json.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(k, v)| {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        (host == registry).then_some(v)
    })?;
    let auth = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let (user, pass) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(DockerCredentials {
        username: Some(user.to_string()),
        password: Some(pass.to_string()),
        serveraddress: Some(registry.to_string()),
        ..DockerCredentials::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_docker_cli_auths() {
        let json = r#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"YWxpY2U6czNjcmV0"}}}"#;
        let c = from_config_json(json, "127.0.0.1:5000").unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(from_config_json(json, "other:5000").is_none());
    }
}
