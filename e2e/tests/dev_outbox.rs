//! `meridian dev`'s outbox page in a real headless browser (chromium through chromedriver):
//! a German patient's appointment needs rebooking when its practitioner is deactivated, the
//! notifications consumer (on the outbox) schedules the notice, the dispatcher holds it
//! instead of sending it, and `/dev/outbox` shows it with the recipient masked; the JSON
//! twin says the same.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use meridian_e2e::{Dev, free_addr, http};
use serde_json::{Value, json};

/// chromedriver on a free port of 127.0.0.1; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let found = Command::new("chromedriver")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "this test drives a headless chromium through chromedriver, which is not installed: \
             `apt-get install -y chromium chromium-driver` (.ci/run does)"
        );
        let addr = free_addr();
        let child = Command::new("chromedriver")
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_notice_shows_on_the_dev_outbox_page_in_a_browser() {
    let driver = Driver::start();
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_examples(work.path());
    dev.await_ready("de", Duration::from_secs(180));
    let bearers = dev.bearers();
    let admin = bearers["clinic-admin"].clone();
    let dr = dev.bearer_for("dr-weber", "Practitioner", "DE");
    let lena = dev.bearer_for("lena-login", "Patient", "DE");

    // Lena's record, with her e-mail address, in the vault; her account books.
    let patient = json!({
        "resourceType": "Patient",
        "extension": [{"url": "https://meridian.dev/fhir/StructureDefinition/account-subject", "valueString": "lena-login"}],
        "name": [{"family": "Vogelsang", "given": ["Lena"]}],
        "birthDate": "1990-05-17",
        "telecom": [{"system": "email", "value": "lena.vogelsang@example.de"}],
    });
    let (status, created) = http(
        dev.addr,
        "POST",
        "/de/v1/fhir/Patient",
        &[("Authorization", &dr)],
        Some(&patient),
    );
    assert_eq!(status, 201, "{created}");
    let anna = dev.create_anna(&admin);
    let id = anna["id"].as_str().unwrap();
    let slots = dev.open_mornings(&admin, id, &lena);
    let booking = json!({"practitionerId": id, "start": slots["slots"][0]["start"], "reason": "Herzrasen"});
    let headers = [("Authorization", lena.as_str()), ("Idempotency-Key", "outbox-1")];
    let (status, booked) = http(dev.addr, "POST", "/de/v1/appointments", &headers, Some(&booking));
    assert_eq!(status, 201, "{booked}");
    assert_eq!(
        booked["patientId"], created["id"],
        "the account's client ID is the Patient's"
    );
    // Anna leaves and no other cardiologist can take over: the appointment needs rebooking.
    let path = format!("/de/v1/practitioners/{id}/deactivate");
    let (status, body) = http(dev.addr, "POST", &path, &[("Authorization", &admin)], None);
    assert_eq!(status, 200, "{body}");

    let asked = Instant::now();
    let held = loop {
        let (status, held) = dev.get("/dev/outbox.json");
        assert_eq!(status, 200, "{held}");
        if held.as_array().is_some_and(|a| !a.is_empty()) {
            break held;
        }
        assert!(asked.elapsed() < Duration::from_secs(30), "nothing held: {held}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let messages = held.as_array().unwrap();
    assert_eq!(messages.len(), 1, "{held:#}");
    let message = &messages[0];
    assert_eq!(
        (
            &message["country"],
            &message["kind"],
            &message["channel"],
            &message["recipient"]
        ),
        (
            &json!("DE"),
            &json!("needs_rebooking"),
            &json!("email"),
            &json!("l***@example.de")
        )
    );
    let text = held.to_string();
    assert!(!text.contains("vogelsang") && !text.contains("Herzrasen"), "{text}");

    // The page, as a browser renders it.
    let capabilities: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}
    }))
    .unwrap();
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver");
    let checked = async {
        browser.goto(&format!("http://{}/dev/outbox", dev.addr)).await?;
        assert_eq!(browser.title().await?, "Meridian dev outbox");
        let summary = browser.find(Locator::Id("summary")).await?.text().await?;
        assert_eq!(summary, "1 message held.");
        let rows = browser.find_all(Locator::Css("#messages tbody tr.message")).await?;
        assert_eq!(rows.len(), 1);
        let cell = async |class: &str| rows[0].find(Locator::Css(&format!("td.{class}"))).await?.text().await;
        assert_eq!(cell("country").await?, "DE");
        assert_eq!(cell("kind").await?, "needs_rebooking");
        assert_eq!(cell("channel").await?, "email");
        assert_eq!(cell("recipient").await?, "l***@example.de");
        assert_eq!(cell("subject").await?, "Please rebook your appointment");
        let body = cell("body").await?;
        // Told in Berlin's time.
        assert!(
            body.starts_with("Your appointment on ") && (body.contains("(CET)") || body.contains("(CEST)")),
            "{body}"
        );
        assert!(
            body.ends_with(&format!("Reference: {}.", booked["id"].as_str().unwrap())),
            "{body}"
        );
        let source = browser.source().await?;
        assert!(
            !source.contains("vogelsang") && !source.contains("Vogelsang"),
            "{source}"
        );
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    browser.close().await.unwrap();
    checked.unwrap();
    drop(driver);
}
