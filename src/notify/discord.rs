//! Discord's webhook payload: `content` (the sentence) and, when there are
//! facts or a log tail, one embed with them; mentions are switched off so a
//! log line with `@everyone` pings no one.
//!
//! Sources: Discord's "Execute Webhook" and "Embed Object" (content at most
//! 2000 characters, embed description 4096, at most 25 fields, a field's
//! value 1024) and "Allowed Mentions Object".

use serde_json::{json, Map, Value};

use super::message::{head, tail, Message, Tone};

/// `{"content": …, "embeds": [{color, fields, description?, timestamp}]?,
/// "allowed_mentions": {"parse": []}}`.
pub(super) fn payload(m: &Message) -> Value {
    let mut body = Map::new();
    body.insert("content".into(), json!(head(&m.text, 2000)));
    let fields: Vec<Value> = m
        .facts
        .iter()
        .chain(m.links.iter())
        .take(25)
        .map(|(name, value)| json!({"name": name, "value": head(value, 1024), "inline": true}))
        .collect();
    if !fields.is_empty() || m.log_tail.is_some() {
        let mut embed = Map::new();
        embed.insert("color".into(), json!(color(m.tone)));
        if !fields.is_empty() {
            embed.insert("fields".into(), json!(fields));
        }
        if let Some(log) = &m.log_tail {
            let log = log.replace("```", "` ` `");
            embed.insert(
                "description".into(),
                json!(format!("```\n{}\n```", tail(&log, 4000))),
            );
        }
        embed.insert("timestamp".into(), json!(m.time));
        body.insert("embeds".into(), json!([embed]));
    }
    body.insert("allowed_mentions".into(), json!({"parse": []}));
    Value::Object(body)
}

/// An embed's color, as Discord takes it: `0xRRGGBB` as an integer.
fn color(tone: Tone) -> u32 {
    match tone {
        Tone::Info => 0x1D9BD1,
        Tone::Good => 0x2EB67D,
        Tone::Warning => 0xECB22E,
        Tone::Bad => 0xE01E5A,
    }
}
