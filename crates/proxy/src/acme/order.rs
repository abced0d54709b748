//! One order (RFC 8555 §7.4): the authorizations' challenges answered, the
//! CA's validation awaited, a new key and CSR, and the issued chain
//! returned with its key. A failure says what the CA said about each name.

use std::time::Duration;

use instant_acme::{AuthorizationStatus, Identifier, NewOrder, Order, OrderStatus, RetryPolicy};

use super::challenges::{alpn_certificate, Answering};
use super::options::ChallengeKind;
use super::renewal::Manager;

/// How long one order may take, its challenges and the issuance included.
pub(super) const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the CA gets to validate the challenges, then to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

impl Manager {
    /// One order for `hosts`, RFC 8555 §7.4: returns the PEM chain and its
    /// new private key, in one text.
    pub(super) async fn order(&mut self, hosts: &[String]) -> Result<String, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = hosts.iter().cloned().map(Identifier::Dns).collect();
        let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(order) => order,
            Err(e) => {
                if e.to_string().contains("accountDoesNotExist") {
                    // The CA forgot the account (a test CA restarted): a
                    // new one next time.
                    self.account = None;
                    let _ = std::fs::remove_file(self.account_file());
                }
                return Err(format!("new order: {e}"));
            }
        };
        let router = self.router.clone();
        let mut answering = Answering::new(&router.acme);
        let kind = self.opts.challenge;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            let name = authz.identifier().to_string();
            match authz.status {
                // Validated earlier and still good (RFC 8555 §7.1.4).
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(format!("the authorization for {name} is {other:?}")),
            }
            let mut challenge = authz.challenge(kind.acme_type()).ok_or_else(|| {
                format!("the CA offers no {} challenge for {name}", kind.as_str())
            })?;
            let key_authorization = challenge.key_authorization();
            tracing::info!(%name, challenge = %kind.as_str(), "answering the ACME challenge");
            match kind {
                ChallengeKind::Http01 => answering.http01(&challenge.token, &key_authorization),
                ChallengeKind::TlsAlpn01 => {
                    answering.tls_alpn01(&name, alpn_certificate(&name, &key_authorization)?)
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let polling = RetryPolicy::new().timeout(POLL_TIMEOUT);
        match order.poll_ready(&polling).await {
            Ok(OrderStatus::Ready) => {}
            Ok(status) => return Err(why_invalid(&mut order, format!("order {status:?}")).await),
            Err(instant_acme::Error::Api(problem)) => {
                return Err(why_invalid(&mut order, problem.to_string()).await)
            }
            Err(e) => return Err(format!("waiting for validation: {e}")),
        }
        drop(answering);
        let key = rcgen::KeyPair::generate().map_err(|e| format!("new key: {e}"))?;
        let mut params =
            rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| format!("CSR: {e}"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("CSR: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let mut pem = order
            .poll_certificate(&polling)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&key.serialize_pem());
        Ok(pem)
    }
}

/// What the CA said about each failed challenge (RFC 8555 §7.1.5 `error`),
/// after `outcome`.
async fn why_invalid(order: &mut Order, outcome: String) -> String {
    let mut reasons = vec![outcome];
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        if let Ok(state) = authz.refresh().await {
            for challenge in &state.challenges {
                if let Some(e) = &challenge.error {
                    reasons.push(format!("{name}: {e}"));
                }
            }
        }
    }
    reasons.join("; ")
}
