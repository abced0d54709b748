//! The generic JSON webhook, signed as the Standard Webhooks specification
//! (v1.0.0, <https://www.standardwebhooks.com>, "Signature scheme" and
//! "Webhook headers") signs, so any of its verifier libraries checks it.
//!
//! The request: `POST`, `content-type: application/json`, the body
//!
//! ```json
//! {"type": "deploy.switched", "timestamp": "2025-05-01T12:00:00.000Z",
//!  "data": {"event": "switched", "app": "web", "environment": "production",
//!           "version": "2.3.0", …every known field of the notice…,
//!           "title": "web (production): 2.3.0 is live", "text": "…"}}
//! ```
//!
//! and three headers:
//! - `webhook-id`: `msg_` and 24 hex digits, the same on every attempt of one
//!   delivery (the receiver's idempotency key);
//! - `webhook-timestamp`: the attempt's time, integer seconds since the Unix
//!   epoch (the receiver rejects old ones, against replay);
//! - `webhook-signature`: `v1,` then the base64 (standard alphabet, padded)
//!   HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, the body byte
//!   for byte as sent.
//!
//! The key is the secret's bytes after base64 decoding, with its `whsec_`
//! prefix (optional here) taken off: `whsec_` + `openssl rand -base64 32`.
//! The specification wants 24 to 64 bytes; others are refused.

use base64::Engine;
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::message::Message;
use super::Notice;

/// The body: `{"type": "deploy.<event>", "timestamp", "data"}`, the notice
/// with the message's `title` and `text` in `data`.
pub(super) fn payload(notice: &Notice, m: &Message) -> Value {
    let mut data = serde_json::to_value(notice).unwrap_or_else(|_| json!({}));
    if let Value::Object(fields) = &mut data {
        fields.insert("title".into(), json!(m.title));
        fields.insert("text".into(), json!(m.text));
    }
    json!({
        "type": format!("deploy.{}", notice.event),
        "timestamp": m.time,
        "data": data,
    })
}

/// The HMAC key from the secret: base64 after an optional `whsec_`, 24 to
/// 64 bytes. The error never quotes the secret.
pub(super) fn key(secret: &SecretString) -> Result<hmac::Key, String> {
    let text = secret.expose_secret().trim();
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let how = "make one with `echo whsec_$(openssl rand -base64 32)`";
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| format!("the webhook secret is not base64 (after `whsec_`); {how}"))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!(
            "the webhook secret is {} bytes, Standard Webhooks wants 24 to 64; {how}",
            bytes.len()
        ));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
pub(super) fn sign(key: &hmac::Key, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(id.as_bytes());
    ctx.update(format!(".{timestamp}.").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}
