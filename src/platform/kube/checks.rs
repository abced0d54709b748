//! The HTTP and Prometheus checks the operator runs: gates against each
//! candidate pod before the switch, verification against the live app after.
//!
//! Each check is one round (no sleeping inside a reconcile); the reconcile
//! requeues and the status counts rounds.

use std::time::Duration;

use crate::health::{http_get, snippet, ProbeClient};
use crate::platform::kube::crd::{HttpCheck, PrometheusCheck};

/// One GET judged by the check's accepted status range.
pub async fn http(client: &ProbeClient, check: &HttpCheck, url: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    let (status, body) = http_get(client, url, None, timeout)
        .await
        .map_err(|why| format!("GET {url} -> {why}"))?;
    let (lo, hi) = check.expect_status.map_or((200, 399), |r| (r.min, r.max));
    if !(lo..=hi).contains(&status) {
        return Err(format!(
            "GET {url} -> {status} (expected {lo}-{hi}): {}",
            snippet(&body)
        ));
    }
    Ok(())
}

/// The URL of a gate check against one pod.
pub fn pod_url(check: &HttpCheck, pod_ip: &str) -> String {
    let port = check.port.unwrap_or(80);
    let host = if pod_ip.contains(':') {
        format!("[{pod_ip}]")
    } else {
        pod_ip.to_string()
    };
    format!("http://{host}:{port}{}", check.path)
}

/// Runs a PromQL query and compares its first value with the maximum.
pub async fn prometheus(client: &ProbeClient, check: &PrometheusCheck) -> Result<(), String> {
    let url = format!(
        "{}/api/v1/query?query={}",
        check.address.trim_end_matches('/'),
        percent_encode(&check.query)
    );
    let (status, body) = http_get(client, &url, None, Duration::from_secs(10))
        .await
        .map_err(|why| format!("Prometheus query failed: {why}"))?;
    if status != 200 {
        return Err(format!("Prometheus answered {status}: {}", snippet(&body)));
    }
    let value = first_value(&body)
        .ok_or_else(|| format!("Prometheus returned no value for {:?}", check.query))?;
    if value > check.max || value.is_nan() {
        return Err(format!("{} = {value} exceeds {}", check.query, check.max));
    }
    Ok(())
}

/// The first sample of a Prometheus query answer (vector or scalar).
fn first_value(body: &[u8]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let result = &v["data"]["result"];
    let pair = match v["data"]["resultType"].as_str()? {
        "vector" => &result.as_array()?.first()?["value"],
        "scalar" => result,
        _ => return None,
    };
    pair.get(1)?.as_str()?.parse().ok()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_are_read_as_vector_or_scalar() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.25"]}]}}"#;
        assert_eq!(first_value(vector), Some(0.25));
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(first_value(scalar), Some(3.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(first_value(empty), None);
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode("sum(rate(x{code=~\"5..\"}[1m]))"),
            "sum%28rate%28x%7Bcode%3D~%225..%22%7D%5B1m%5D%29%29"
        );
    }
}
