//! The transports against real servers the tests start: e-mail through a real SMTP server
//! (Python's aiosmtpd, writing a Maildir), SMS through a local HTTP endpoint speaking the
//! provider interface; retries and `failed` when the provider keeps refusing. And the whole
//! way as `meridian notifications` runs it: an event in the outbox, published by the relay to
//! a real Kafka-protocol broker (tansu), consumed, and its e-mail delivered.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{Duration as Days, Utc};
use meridian_notifications::dispatch::Outcome;
use meridian_notifications::plan::Channel;
use meridian_notifications::transport::Transports;
use meridian_notifications::transport::sms::{Sms, SmsSettings};
use meridian_notifications::transport::smtp::{Security, Smtp, SmtpSettings};
use serde_json::{Value, json};
use support::{World, event};
use uuid::Uuid;

/// A real SMTP server on 127.0.0.1 delivering into a Maildir; killed when dropped.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    fn start() -> Self {
        let venv = std::env::var("MERIDIAN_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/meridian-venv"));
        let python = venv.join("bin/python");
        let has_aiosmtpd = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has_aiosmtpd,
            "the SMTP tests need Python's aiosmtpd in {}: install it with `{}/bin/pip install aiosmtpd` \
             (.ci/run does), or point MERIDIAN_VENV at a venv that has it",
            venv.display(),
            venv.display()
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // A Maildir that does not exist yet: aiosmtpd creates it with its tmp/new/cur.
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "aiosmtpd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, maildir }
    }

    fn settings(&self) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            security: Security::None,
            from: "Meridian <no-reply@meridian.test>".into(),
            credentials: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// The messages delivered, as raw text.
    fn delivered(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail/new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header's value in a raw message.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    message
        .lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
}

fn body(message: &str) -> String {
    let (_, body) = message.split_once("\n\n").unwrap();
    // Quoted-printable soft line breaks.
    body.replace("=\n", "").trim().to_string()
}

#[tokio::test]
async fn a_reminder_reaches_a_real_smtp_server_with_its_recipient_subject_and_message_id() {
    let server = SmtpServer::start();
    let w = World::start().await;
    let anna = w
        .patient(
            "DE",
            "Schmidt",
            json!([{"system": "email", "value": "anna.schmidt@example.de"}]),
        )
        .await;
    w.reminders_consent("DE", anna, true, "2026-01-01T00:00:00Z").await;
    let appointment = w
        .schedule("booked", "DE", anna, "2030-01-15T09:30:00Z".parse().unwrap())
        .await;
    // Due now, as it would be the day before.
    sqlx::query("UPDATE notifications SET next_at = now() - interval '1 second' WHERE appointment_id = $1")
        .bind(appointment)
        .execute(&w.admin)
        .await
        .unwrap();
    let smtp = Smtp::new(&server.settings()).unwrap();
    let dispatcher = w.dispatcher(
        Transports {
            email: Some(Arc::new(smtp)),
            sms: None,
        },
        3,
    );
    let outcomes = dispatcher.dispatch_due().await.unwrap();
    assert_eq!(outcomes.len(), 1);
    let (id, outcome) = &outcomes[0];
    assert_eq!(outcome, &Outcome::Sent(Channel::Email));
    let notice = w.notices(appointment).await.remove(0);
    assert_eq!(
        (notice.status.as_str(), notice.channel.as_deref()),
        ("sent", Some("email"))
    );

    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let message = &delivered[0];
    assert_eq!(
        header(message, "X-RcptTo"),
        Some("anna.schmidt@example.de"),
        "{message}"
    );
    assert_eq!(header(message, "To"), Some("anna.schmidt@example.de"));
    assert_eq!(header(message, "From"), Some("Meridian <no-reply@meridian.test>"));
    assert_eq!(header(message, "Subject"), Some("Appointment reminder"));
    assert_eq!(
        header(message, "Message-ID"),
        Some(format!("<meridian-notification-{id}@meridian.test>").as_str())
    );
    // The time in Berlin's zone; no reason, no name.
    assert_eq!(
        body(message),
        format!(
            "Reminder: you have an appointment on Tuesday 15 January 2030 at 10:30 (CET). Reference: {appointment}."
        )
    );
    assert!(!message.contains("Chest pain") && !message.contains("Schmidt\n"));
}

#[tokio::test]
async fn a_relay_that_does_not_answer_is_tried_again_then_the_notice_fails() {
    let w = World::start().await;
    let paul = w
        .patient("FR", "Durand", json!([{"system": "email", "value": "paul@example.fr"}]))
        .await;
    let appointment = w.schedule("reassigned", "FR", paul, Utc::now() + Days::days(2)).await;
    // A server that went away: its port is closed.
    let gone = SmtpServer::start();
    let settings = gone.settings();
    drop(gone);
    let dispatcher = w.dispatcher(
        Transports {
            email: Some(Arc::new(Smtp::new(&settings).unwrap())),
            sms: None,
        },
        3,
    );
    let outcomes = dispatcher.dispatch_due().await.unwrap();
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|(_, o)| match o {
            Outcome::Retry(_) => "retry",
            Outcome::Failed(_) => "failed",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["retry", "retry", "failed"], "{outcomes:?}");
    let notice = w.notices(appointment).await.remove(0);
    assert_eq!((notice.status.as_str(), notice.attempts), ("failed", 3));
    let error = notice.last_error.unwrap();
    assert!(
        error.starts_with("SMTP: the relay") && error.ends_with("(attempt 3)"),
        "{error}"
    );
    assert!(!error.contains("paul"), "{error}");
}

#[test]
fn plain_smtp_is_refused_off_this_machine() {
    let settings = SmtpSettings {
        host: "smtp.example.org".into(),
        port: 25,
        security: Security::None,
        from: "no-reply@example.org".into(),
        credentials: None,
        timeout: Duration::from_secs(1),
    };
    let err = Smtp::new(&settings).err().unwrap().to_string();
    assert!(err.contains("would leave this machine unencrypted"), "{err}");
    let err = Smtp::new(&SmtpSettings {
        from: "not an address".into(),
        host: "127.0.0.1".into(),
        ..settings
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.starts_with("SMTP settings: sender \"not an address\""), "{err}");
}

/// A request the provider received: its Authorization and Idempotency-Key headers, and body.
type Received = (Option<String>, Option<String>, Value);

/// What the local SMS provider received, and what it answers.
#[derive(Clone, Default)]
struct Provider {
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<u16>>,
}

async fn provider(State(p): State<Provider>, headers: HeaderMap, body: String) -> StatusCode {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    p.received
        .lock()
        .unwrap()
        .push((text("authorization"), text("idempotency-key"), json));
    StatusCode::from_u16(*p.status.lock().unwrap()).unwrap()
}

/// Starts the provider on 127.0.0.1; returns its URL.
async fn start_provider(p: &Provider) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/messages", post(provider))
        .with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/v1/messages")
}

#[tokio::test]
async fn sms_is_posted_to_the_provider_with_its_token_and_a_refusal_is_retried_then_failed() {
    let w = World::start().await;
    let claire = w
        .patient("FR", "Martin", json!([{"system": "sms", "value": "+33 6 12 34 56 78"}]))
        .await;
    let p = Provider::default();
    *p.status.lock().unwrap() = 202;
    let url = start_provider(&p).await;
    let sms = Sms::new(&SmsSettings {
        url: url.clone(),
        token: "provider-token-1\n".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let dispatcher = w.dispatcher(
        Transports {
            email: None,
            sms: Some(Arc::new(sms)),
        },
        3,
    );
    let starts = "2030-01-15T09:30:00Z".parse().unwrap();
    let appointment = w.schedule("needs_rebooking", "FR", claire, starts).await;
    let outcomes = dispatcher.dispatch_due().await.unwrap();
    assert_eq!(outcomes[0].1, Outcome::Sent(Channel::Sms));
    let id = outcomes[0].0;
    {
        let received = p.received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let (authorization, key, body) = &received[0];
        assert_eq!(authorization.as_deref(), Some("Bearer provider-token-1"));
        let expected_key = format!("meridian-notification-{id}");
        assert_eq!(key.as_deref(), Some(expected_key.as_str()));
        assert_eq!(
            body,
            &json!({
                "to": "+33 6 12 34 56 78",
                "body": format!("Your appointment on Tuesday 15 January 2030 at 10:30 (CET) cannot take place and no \
                                 other practitioner was free then. Please book a new appointment. Reference: {appointment}."),
                "idempotencyKey": expected_key,
            })
        );
    }
    let notice = w.notices(appointment).await.remove(0);
    assert_eq!(
        (notice.status.as_str(), notice.channel.as_deref()),
        ("sent", Some("sms"))
    );

    // The provider fails: three attempts, then `failed` with its status.
    *p.status.lock().unwrap() = 500;
    let second = w.schedule("reassigned", "FR", claire, starts).await;
    let outcomes = dispatcher.dispatch_due().await.unwrap();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(matches!(outcomes[0].1, Outcome::Retry(_)) && matches!(outcomes[1].1, Outcome::Retry(_)));
    let notice = w.notices(second).await.remove(0);
    assert_eq!((notice.status.as_str(), notice.attempts), ("failed", 3));
    assert_eq!(
        notice.last_error.as_deref(),
        Some("SMS provider answered 500 Internal Server Error (attempt 3)")
    );
    let received = p.received.lock().unwrap();
    assert_eq!(received.len(), 4);
    // Every attempt at one notice carries the same key.
    let keys: std::collections::BTreeSet<_> = received[1..].iter().map(|(_, k, _)| k.clone()).collect();
    assert_eq!(keys.len(), 1);
}

#[test]
fn the_provider_must_be_reached_over_https_off_this_machine() {
    let settings = |url: &str| SmsSettings {
        url: url.into(),
        token: "t".into(),
        timeout: Duration::from_secs(1),
    };
    let err = Sms::new(&settings("http://sms.example.org/send"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("must be reached over https"), "{err}");
    assert!(Sms::new(&settings("https://sms.example.org/send")).is_ok());
    let err = Sms::new(&settings("ftp://x")).err().unwrap().to_string();
    assert!(err.contains("expected https://"), "{err}");
}

#[tokio::test]
async fn meridian_notifications_takes_an_event_from_kafka_to_a_patients_mailbox() {
    let server = SmtpServer::start();
    let w = World::start().await;
    let broker = meridian_localkafka::Broker::start(meridian_localkafka::Storage::Memory)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let kafka = meridian_events::kafka::KafkaOptions::plaintext(broker.bootstrap());
    let config = kafka.client_config().unwrap();
    meridian_events::topics::ensure(&config, &meridian_events::topics::TopicSettings::default())
        .await
        .unwrap();
    tokio::spawn(meridian_events::relay::Relay::new(w.admin.clone(), config).run(std::future::pending()));
    // The Region's mounted Secrets and the Country manifest, as files.
    let keys = tempfile::tempdir().unwrap();
    for (entry, value) in &w.keys {
        std::fs::write(keys.path().join(entry), value).unwrap();
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/countries/fr.yaml");
    let url = |role| meridian_records::roles::as_login(&w.pg.url(), role, "secret");
    let smtp = server.settings();
    let options = meridian_notifications::serve::NotificationsOptions {
        stores: meridian_records::serve::VaultStores {
            database_url: url(support::WORKLOAD),
            vault_database_url: url(support::VAULT),
            database_ca_file: None,
            vault_keys_dir: keys.path().to_path_buf(),
        },
        region: None,
        country_manifests: vec![manifest],
        kafka,
        smtp_host: Some(smtp.host),
        smtp_port: smtp.port,
        smtp_security: Security::None,
        smtp_from: Some(smtp.from),
        smtp_username: None,
        smtp_password_file: None,
        sms_url: None,
        sms_token_file: None,
        max_attempts: 3,
        ops: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(meridian_notifications::serve::run_until(options, async {
        let _ = stopped.await;
    }));

    // France has smsReminders, but no SMS provider is configured: by e-mail.
    let paul = w
        .patient("FR", "Durand", json!([{"system": "email", "value": "paul.durand@example.fr"}, {"system": "sms", "value": "+33 6 98 76 54 32"}]))
        .await;
    let appointment = Uuid::new_v4();
    let moved = event(
        "reassigned",
        "FR",
        appointment,
        paul,
        "2030-03-04T08:00:00Z".parse().unwrap(),
        Utc::now(),
    );
    let mut tx = w.admin.begin().await.unwrap();
    meridian_shared::outbox::enqueue(
        &mut tx,
        &meridian_shared::outbox::Event {
            country_code: "FR",
            topic: meridian_shared::outbox::APPOINTMENT_EVENTS,
            event_type: "appointment.reassigned",
            key: Uuid::new_v4(),
            payload: &moved.payload,
            correlation_id: Uuid::new_v4(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let started = Instant::now();
    while server.delivered().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no e-mail after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(header(&delivered[0], "X-RcptTo"), Some("paul.durand@example.fr"));
    assert_eq!(
        header(&delivered[0], "Subject"),
        Some("Your appointment has a new practitioner")
    );
    assert!(
        body(&delivered[0]).contains("Monday 4 March 2030 at 09:00 (CET)"),
        "{}",
        delivered[0]
    );
    let notice = w.notices(appointment).await.remove(0);
    assert_eq!(
        (notice.status.as_str(), notice.channel.as_deref()),
        ("sent", Some("email"))
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("it stops when asked")
        .unwrap()
        .unwrap();
}
