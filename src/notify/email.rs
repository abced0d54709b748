//! A notice by e-mail: one plain-text message submitted to an SMTP server,
//! with STARTTLS required (RFC 3207), TLS from the start (RFC 8314), or
//! plaintext to this host, and AUTH (PLAIN or LOGIN, RFC 4954) when a
//! username is given. TLS verifies the server as `trust` says, for the
//! name in `server`.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use super::delivery::{chain, Attempt};
use super::destination::{Email, SmtpTls};
use super::message::Message;
use super::trust;

/// A message ready to submit, and the transport to submit it by.
pub(super) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    message: lettre::Message,
}

impl Mailer {
    /// Builds the message and the transport, reading the password now.
    /// `timeout` bounds each SMTP command's wait.
    ///
    /// Errors: an unreadable password (`secret: …`), a bad `ca_file`, an
    /// address that does not parse (the config check catches those first).
    pub(super) fn new(email: &Email, m: &Message, timeout: Duration) -> Result<Mailer, String> {
        let mailbox = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| format!("address {text:?}: {e}"))
        };
        let mut builder = lettre::Message::builder()
            .from(mailbox(&email.from)?)
            .subject(m.title.as_str())
            .header(ContentType::TEXT_PLAIN);
        for to in &email.to {
            builder = builder.to(mailbox(to)?);
        }
        let message = builder.body(body(m)).map_err(|e| format!("message: {e}"))?;
        let tls = match email.tls {
            SmtpTls::Starttls => Tls::Required(tls_parameters(email)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(email)?),
            SmtpTls::None => Tls::None,
        };
        let mut transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(email.server.host.as_str())
                .port(email.port())
                .tls(tls)
                .timeout(Some(timeout));
        if let (Some(username), Some(password)) = (&email.username, &email.password) {
            let password = password.read().map_err(|e| format!("secret: {e}"))?;
            transport = transport.credentials(Credentials::new(
                username.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Mailer {
            transport: transport.build(),
            message,
        })
    }

    /// One submission: a new connection, EHLO, STARTTLS, AUTH, MAIL, RCPT,
    /// DATA. A 4xx reply or a network error is worth another attempt; a
    /// 5xx reply (a refused login, an unknown recipient) or a TLS failure
    /// (an untrusted certificate) is not.
    pub(super) async fn send(&self) -> Attempt {
        match self.transport.send(self.message.clone()).await {
            Ok(response) => Attempt::Delivered(response.code().to_string()),
            Err(e) if e.is_permanent() || e.is_tls() || e.is_client() => Attempt::Final(chain(&e)),
            Err(e) => Attempt::Retry {
                detail: chain(&e),
                after: None,
            },
        }
    }
}

/// TLS toward `server`'s name, trusting `trust`'s roots plus `ca_file`.
fn tls_parameters(email: &Email) -> Result<TlsParameters, String> {
    let mut builder =
        TlsParameters::builder(email.server.host.clone()).certificate_store(CertificateStore::None);
    for root in trust::roots(email.ca_file.as_deref())? {
        let root = Certificate::from_der(root.to_vec()).map_err(|e| format!("TLS: {e}"))?;
        builder = builder.add_root_certificate(root);
    }
    builder.build_rustls().map_err(|e| format!("TLS: {e}"))
}

/// The text: the sentence, the facts and links one a line, the log tail.
fn body(m: &Message) -> String {
    let mut text = format!("{}\n\n", m.text);
    for (label, value) in m.facts.iter().chain(m.links.iter()) {
        text.push_str(&format!("{label}: {value}\n"));
    }
    if let Some(log) = &m.log_tail {
        text.push_str(&format!("\nLast log lines:\n{}\n", log.trim_end()));
    }
    text.push_str(&format!("\n-- \ncyan, {}\n", m.time));
    text
}
