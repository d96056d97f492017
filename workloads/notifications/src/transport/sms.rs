//! SMS through an HTTP provider. The interface, which a provider's adapter implements:
//!
//! ```text
//! POST <url>
//! Authorization: Bearer <token>
//! Idempotency-Key: meridian-notification-<notice id>
//! Content-Type: application/json
//!
//! {"to": "+4915123456789", "body": "Reminder: ...", "idempotencyKey": "meridian-notification-<notice id>"}
//! ```
//!
//! Any 2xx answer means the provider took the message; anything else, or no answer within
//! the timeout, is a failed attempt (its status in `last_error`), tried again later. The
//! provider should drop a second message with an idempotency key it has seen. `https` is
//! required off this machine, the certificate verified against the system's roots.

use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Bytes;

use super::{Delivered, Outgoing, SendError, Transport};
use crate::Error;

/// Where the provider is and how to authenticate to it.
#[derive(Clone)]
pub struct SmsSettings {
    pub url: String,
    pub token: String,
    pub timeout: Duration,
}

/// Posts messages to the provider.
pub struct Sms {
    url: hyper::Uri,
    authorization: String,
    timeout: Duration,
    client: meridian_shared::tls::HttpsClient<Full<Bytes>>,
}

impl Sms {
    pub fn new(settings: &SmsSettings) -> crate::Result<Self> {
        let url: hyper::Uri = settings
            .url
            .parse()
            .map_err(|e| Error::Sms(format!("URL {:?}: {e}", settings.url)))?;
        let host = url.host().unwrap_or_default();
        match url.scheme_str() {
            Some("https") => {}
            Some("http") if meridian_shared::tls::is_loopback(host) => {}
            Some("http") => {
                return Err(Error::Sms(format!(
                    "{} is off this machine: the provider must be reached over https",
                    settings.url
                )));
            }
            _ => return Err(Error::Sms(format!("URL {:?}: expected https://…", settings.url))),
        }
        if settings.token.trim().is_empty() {
            return Err(Error::Sms("the provider's token is empty".into()));
        }
        Ok(Self {
            url,
            authorization: format!("Bearer {}", settings.token.trim()),
            timeout: settings.timeout,
            client: meridian_shared::tls::https_client().map_err(Error::Sms)?,
        })
    }
}

impl Transport for Sms {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            let key = message.idempotency_key();
            let body = serde_json::json!({ "to": message.to, "body": message.body, "idempotencyKey": key });
            let request = hyper::Request::post(self.url.clone())
                .header(hyper::header::AUTHORIZATION, &self.authorization)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", &key)
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| SendError(format!("SMS request: {e}")))?;
            let answer = tokio::time::timeout(self.timeout, self.client.request(request))
                .await
                .map_err(|_| SendError(format!("SMS provider: no answer within {:?}", self.timeout)))?
                .map_err(|e| SendError(format!("SMS provider unreachable: {e}")))?;
            let status = answer.status();
            // The provider's body is not kept: it may repeat the number.
            if status.is_success() {
                Ok(Delivered::Sent)
            } else {
                Err(SendError(format!("SMS provider answered {status}")))
            }
        })
    }
}
