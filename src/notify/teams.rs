//! Microsoft Teams' payload for a Workflows webhook (Power Automate's "When
//! a Teams webhook request is received" posting a card): a `message` with
//! one Adaptive Card attachment. Workflows take Adaptive Cards only, not
//! the retired connectors' MessageCard.
//!
//! Sources: Microsoft Learn, "Create incoming webhooks with Workflows for
//! Microsoft Teams" and "Send Adaptive Cards using an incoming webhook"
//! (the envelope); adaptivecards.io's schema (TextBlock, FactSet,
//! Action.OpenUrl). Version 1.2, which every Teams client renders, has
//! everything used here (monospace text came with 1.2).

use serde_json::{json, Value};

use super::message::{tail, Message, Tone};

/// `{"type": "message", "attachments": [{"contentType":
/// "application/vnd.microsoft.card.adaptive", "contentUrl": null,
/// "content": AdaptiveCard}]}`; the card: the title, the sentence, a
/// FactSet, the log tail in monospace, and a button per link.
pub(super) fn payload(m: &Message) -> Value {
    let mut body = vec![
        json!({
            "type": "TextBlock", "text": m.title, "weight": "Bolder", "size": "Medium",
            "color": color(m.tone), "wrap": true,
        }),
        json!({"type": "TextBlock", "text": m.text, "wrap": true}),
    ];
    if !m.facts.is_empty() {
        let facts: Vec<Value> = m
            .facts
            .iter()
            .map(|(title, value)| json!({"title": title, "value": value}))
            .collect();
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    if let Some(log) = &m.log_tail {
        body.push(json!({
            "type": "TextBlock", "text": tail(log, 4000), "fontType": "Monospace",
            "size": "Small", "wrap": true,
        }));
    }
    let actions: Vec<Value> = m
        .links
        .iter()
        .map(|(label, url)| json!({"type": "Action.OpenUrl", "title": label, "url": url}))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.2",
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = json!(actions);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// A TextBlock's color for the tone.
fn color(tone: Tone) -> &'static str {
    match tone {
        Tone::Info => "Accent",
        Tone::Good => "Good",
        Tone::Warning => "Warning",
        Tone::Bad => "Attention",
    }
}
