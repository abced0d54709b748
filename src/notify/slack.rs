//! Slack's incoming-webhook payload: `text` (what notifications and old
//! clients show) and `blocks` (Block Kit) with the facts and the log tail.
//!
//! Sources: <https://api.slack.com/messaging/webhooks>, Block Kit's section
//! block (text at most 3000 characters, at most 10 fields of 2000), and
//! "Formatting text for app surfaces" (`&`, `<`, `>` escaped as entities).

use serde_json::{json, Value};

use super::message::{head, tail, Message};

/// `{"text": …, "blocks": [section(text), section(fields)?, section(log)?]}`.
pub(super) fn payload(m: &Message) -> Value {
    let text = escape(&m.text);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": head(&text, 3000)},
    })];
    let fields: Vec<Value> = m
        .facts
        .iter()
        .map(|(label, value)| format!("*{label}*\n{}", escape(value)))
        .chain(
            m.links
                .iter()
                .map(|(label, url)| format!("*{label}*\n<{}>", escape(url))),
        )
        .take(10)
        .map(|field| json!({"type": "mrkdwn", "text": head(&field, 2000)}))
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(log) = &m.log_tail {
        let log = escape(log).replace("```", "` ` `");
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("```{}```", tail(&log, 2990))},
        }));
    }
    json!({"text": text, "blocks": blocks})
}

/// Slack's three control characters as entities.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
