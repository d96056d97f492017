//! E-mail over SMTP (lettre, on tokio with rustls and ring). Off this machine the connection
//! is TLS, implicit or by required STARTTLS, and the server's certificate is verified
//! against the system's roots; plain SMTP is accepted only to a loopback relay.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Delivered, Outgoing, SendError, Transport};
use crate::Error;

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Security {
    /// Plain SMTP: only to a relay on this machine.
    None,
    /// Plain, then STARTTLS, which the server must offer (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

/// Where and as whom e-mail is sent.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The sender, `Meridian <no-reply@example.org>`.
    pub from: String,
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
}

/// Sends e-mail through one relay.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of the `Message-ID`s: the sender's domain.
    id_domain: String,
}

impl Smtp {
    pub fn new(settings: &SmtpSettings) -> crate::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| Error::Smtp(format!("sender {:?}: {e}", settings.from)))?;
        let tls = || {
            TlsParameters::new(settings.host.clone())
                .map_err(|e| Error::Smtp(format!("TLS for {}: {e}", settings.host)))
        };
        let tls = match settings.security {
            Security::None if !meridian_shared::tls::is_loopback(&settings.host) => {
                return Err(Error::Smtp(format!(
                    "plain SMTP to {} would leave this machine unencrypted: use starttls or tls",
                    settings.host
                )));
            }
            Security::None => Tls::None,
            Security::Starttls => Tls::Required(tls()?),
            Security::Tls => Tls::Wrapper(tls()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            id_domain: from.email.domain().to_string(),
            from,
        })
    }

    /// The `Message-ID` of notice `message`: the same at every attempt.
    pub fn message_id(&self, message: &Outgoing) -> String {
        format!("<{}@{}>", message.idempotency_key(), self.id_domain)
    }

    fn build(&self, message: &Outgoing) -> Result<Message, SendError> {
        let to: Mailbox = message
            .to
            .parse()
            .map_err(|_| SendError("the patient's e-mail address is not a valid address".into()))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .message_id(Some(self.message_id(message)))
            .header(ContentType::TEXT_PLAIN)
            .body(message.body.clone())
            .map_err(|e| SendError(format!("the e-mail cannot be built: {e}")))
    }
}

impl Transport for Smtp {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            let email = self.build(message)?;
            self.transport.send(email).await.map_err(|e| SendError(describe(&e)))?;
            Ok(Delivered::Sent)
        })
    }
}

/// What went wrong, without the server's own words (which may repeat the recipient).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_tls() {
        "TLS failed"
    } else if e.is_permanent() {
        "refused the message (permanent error)"
    } else if e.is_transient() {
        "refused the message for now (transient error)"
    } else if e.is_client() {
        "could not be spoken to"
    } else {
        "could not be reached"
    };
    match e.status() {
        Some(code) => format!("SMTP: the relay {what}: {code}"),
        None => format!("SMTP: the relay {what}"),
    }
}
