//! The CLI's write of a BlueGreenDeployment's spec: a JSON Patch (RFC 6902)
//! conditioned on the spec it was computed from, not on the whole object.
//!
//! A replace with the read resourceVersion loses to every other write in
//! between: the operator's status, anyone's annotation. Against a real API
//! server, a script annotating the object back to back made `cyan rollback`
//! lose ten races in a row. What the write must not overwrite is a spec
//! someone else changed; `metadata.generation` moves with the spec alone,
//! so the patch tests it, replaces the spec whole (no merge leaves a stale
//! field in the pod template), and sets or removes only cyan's annotations.

use std::collections::BTreeMap;

use json_patch::Patch;
use serde_json::{json, Value};

use crate::platform::kube::crd::BlueGreenDeployment;
use crate::platform::kube::objects::annotation_path;

/// The patch that turns `read` into `edited` (its spec, and the annotations
/// it sets or removes), applied only while the spec is still `read`'s.
///
/// Errors the API server answers it with: 422 (Unprocessable) when a `test`
/// fails (the spec or, rarely, the annotations changed meanwhile) or an
/// annotation to remove is gone; the caller reads again and retries.
pub fn spec_patch(read: &BlueGreenDeployment, edited: &BlueGreenDeployment) -> Patch {
    let mut ops = vec![
        json!({ "op": "test", "path": "/metadata/generation", "value": read.metadata.generation }),
        json!({ "op": "replace", "path": "/spec", "value": edited.spec }),
    ];
    let empty = BTreeMap::new();
    let before = read.metadata.annotations.as_ref().unwrap_or(&empty);
    let after = edited.metadata.annotations.as_ref().unwrap_or(&empty);
    if read.metadata.annotations.is_none() {
        if !after.is_empty() {
            // No map to add keys to: a new one, on the condition that none
            // was made meanwhile (the resourceVersion: this case is rare).
            ops.push(json!({
                "op": "test", "path": "/metadata/resourceVersion",
                "value": read.metadata.resource_version,
            }));
            ops.push(json!({ "op": "add", "path": "/metadata/annotations", "value": after }));
        }
    } else {
        for (key, value) in after {
            if before.get(key) != Some(value) {
                ops.push(json!({ "op": "add", "path": annotation_path(key), "value": value }));
            }
        }
        for key in before.keys().filter(|k| !after.contains_key(*k)) {
            ops.push(json!({ "op": "remove", "path": annotation_path(key) }));
        }
    }
    serde_json::from_value(Value::Array(ops)).expect("the operations are RFC 6902's")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgd(
        generation: i64,
        annotations: Option<&[(&str, &str)]>,
        image: &str,
    ) -> BlueGreenDeployment {
        serde_json::from_value(json!({
            "apiVersion": "cyan.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": {
                "name": "web", "generation": generation, "resourceVersion": "77",
                "annotations": annotations.map(|a| a.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
            },
            "spec": {
                "selector": { "matchLabels": { "app": "web" } },
                "template": { "spec": { "containers": [{ "name": "web", "image": image }] } },
                "activeService": "web",
            },
        }))
        .unwrap()
    }

    fn ops(p: &Patch) -> Vec<Value> {
        serde_json::to_value(p).unwrap().as_array().unwrap().clone()
    }

    #[test]
    fn the_spec_is_replaced_while_its_generation_holds_and_only_changed_annotations_are_written() {
        let read = bgd(
            4,
            Some(&[("cyan.dev/abort", "h1"), ("example.com/other", "x")]),
            "web:1",
        );
        let mut edited = bgd(
            4,
            Some(&[("cyan.dev/rollback", "h0"), ("example.com/other", "x")]),
            "web:0",
        );
        edited.metadata.resource_version = None;
        let got = ops(&spec_patch(&read, &edited));
        assert_eq!(
            got[0],
            json!({ "op": "test", "path": "/metadata/generation", "value": 4 })
        );
        assert_eq!(got[1]["op"], "replace");
        assert_eq!(got[1]["path"], "/spec");
        assert_eq!(
            got[1]["value"]["template"]["spec"]["containers"][0]["image"],
            "web:0"
        );
        assert_eq!(
            got[2..],
            [
                json!({ "op": "add", "path": "/metadata/annotations/cyan.dev~1rollback", "value": "h0" }),
                json!({ "op": "remove", "path": "/metadata/annotations/cyan.dev~1abort" }),
            ],
            "the other writer's annotation is not touched"
        );
    }

    #[test]
    fn a_first_annotation_map_is_written_only_on_the_object_as_read() {
        let read = bgd(2, None, "web:1");
        let edited = bgd(2, Some(&[("cyan.dev/retry", "t")]), "web:1");
        let got = ops(&spec_patch(&read, &edited));
        assert_eq!(
            got[2..],
            [
                json!({ "op": "test", "path": "/metadata/resourceVersion", "value": "77" }),
                json!({ "op": "add", "path": "/metadata/annotations", "value": { "cyan.dev/retry": "t" } }),
            ]
        );
        let unchanged = ops(&spec_patch(&read, &bgd(2, None, "web:2")));
        assert_eq!(
            unchanged.len(),
            2,
            "no annotation, no condition on them: {unchanged:?}"
        );
    }

    #[test]
    fn pointer_escapes_follow_rfc_6901() {
        assert_eq!(annotation_path("a~b/c"), "/metadata/annotations/a~0b~1c");
    }
}
