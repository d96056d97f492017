//! Countries in other scripts launch from the shipped manifests: Egypt (Arabic, on its own
//! dedicated Region), Japan (CJK, analyzer from its locale) and Thailand (Thai, written
//! without spaces) reach Ready in `meridian dev`, and practitioner search through
//! `/{cc}/v1/practitioners/search` finds names and specialties across their written forms.

use std::time::Duration;

use meridian_e2e::{Dev, condition, http};
use serde_json::{Value, json};

/// `q` as a query-string value: every byte but the unreserved ones percent-encoded.
fn encoded(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The family names `/{cc}/v1/practitioners/search?q=` answers.
fn search(dev: &Dev, token: &str, cc: &str, q: &str) -> Vec<String> {
    let path = format!("/{cc}/v1/practitioners/search?q={}", encoded(q));
    let (status, body) = http(dev.addr, "GET", &path, &[("Authorization", token)], None);
    assert_eq!(status, 200, "{path}: {body}");
    let mut names: Vec<String> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["familyName"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

fn create(dev: &Dev, admin: &str, cc: &str, practitioner: Value) {
    let path = format!("/{cc}/v1/practitioners");
    let (status, created) = http(
        dev.addr,
        "POST",
        &path,
        &[("Authorization", admin)],
        Some(&practitioner),
    );
    assert_eq!(status, 201, "{path}: {created}");
}

#[test]
fn arabic_japanese_and_thai_practitioners_are_found_across_written_forms() {
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_examples(work.path());
    for name in ["eg", "jp", "th"] {
        dev.await_ready(name, Duration::from_secs(180));
        let status = dev
            .get(&format!("/apis/platform.meridian.dev/v1alpha1/countries/{name}"))
            .1;
        assert_eq!(condition(&status, "SearchIndexReady"), Some("True"), "{status}");
    }
    let region = dev.get("/apis/platform.meridian.dev/v1alpha1/regions/me-central-1").1;
    assert_eq!(condition(&region, "Ready"), Some("True"), "{region}");
    let bearers = dev.bearers();
    let (admin, patient) = (bearers["clinic-admin"].clone(), bearers["patient"].clone());

    // Egypt: written with diacritics, hamza on the alef, teh marbuta and alef maqsura.
    create(
        &dev,
        &admin,
        "eg",
        json!({"givenName": "مُحَمَّد", "familyName": "إبراهيم", "specialty": "أمراض القلب", "city": "القاهرة"}),
    );
    create(
        &dev,
        &admin,
        "eg",
        json!({"givenName": "فاطمة", "familyName": "مصطفى", "specialty": "طب الأطفال", "city": "الإسكندرية"}),
    );
    // A general practitioner: the country's synonym reads "doctor" (دكتور) as طبيب.
    create(
        &dev,
        &admin,
        "eg",
        json!({"givenName": "يوسف", "familyName": "السيد", "specialty": "طبيب عام", "city": "الجيزة"}),
    );
    // Japan: a name and a specialty (cardiology, paediatrics).
    create(
        &dev,
        &admin,
        "jp",
        json!({"givenName": "太郎", "familyName": "山田", "specialty": "循環器内科", "city": "東京"}),
    );
    create(
        &dev,
        &admin,
        "jp",
        json!({"givenName": "花子", "familyName": "佐藤", "specialty": "小児科", "city": "大阪"}),
    );
    // Thailand: "doctor specialised in heart disease", one string without spaces.
    create(
        &dev,
        &admin,
        "th",
        json!({"givenName": "สมชาย", "familyName": "ใจดี", "specialty": "แพทย์ผู้เชี่ยวชาญโรคหัวใจ", "city": "กรุงเทพมหานคร"}),
    );

    let took = dev.wait_for("Ibrahim searchable in EG", Duration::from_secs(5), |d| {
        search(d, &patient, "eg", "ابراهيم") == ["إبراهيم"]
    });
    println!("found through /eg/v1 {took:?} after creation");
    dev.wait_for("the others searchable", Duration::from_secs(5), |d| {
        search(d, &patient, "jp", "山田") == ["山田"] && search(d, &patient, "th", "สมชาย") == ["ใจดี"]
    });

    let expectations: &[(&str, &str, &[&str])] = &[
        // Hamza forms of alef.
        ("eg", "ابراهيم", &["إبراهيم"]),
        ("eg", "أبراهيم", &["إبراهيم"]),
        // Without diacritics, and with tatweel.
        ("eg", "محمد", &["إبراهيم"]),
        ("eg", "محـــمد", &["إبراهيم"]),
        // Teh marbuta written as heh; alef maqsura as yeh.
        ("eg", "فاطمه", &["مصطفى"]),
        ("eg", "مصطفي", &["مصطفى"]),
        // Specialties with and without the article and hamza.
        ("eg", "قلب", &["إبراهيم"]),
        ("eg", "امراض القلب", &["إبراهيم"]),
        ("eg", "اطفال", &["مصطفى"]),
        ("eg", "يوسف", &["السيد"]),
        // The synonym of eg.yaml.
        ("eg", "دكتور", &["السيد"]),
        // A specialty no one has (surgery) finds no one.
        ("eg", "جراحة", &[]),
        ("jp", "山田", &["山田"]),
        // Family and given name are two fields: written apart, as on a card.
        ("jp", "山田 太郎", &["山田"]),
        ("jp", "循環器", &["山田"]),
        ("jp", "内科", &["山田"]),
        ("jp", "小児科", &["佐藤"]),
        ("jp", "皮膚科", &[]),
        ("th", "หัวใจ", &["ใจดี"]),
        ("th", "โรคหัวใจ", &["ใจดี"]),
        ("th", "แพทย์", &["ใจดี"]),
        ("th", "กรุงเทพมหานคร", &["ใจดี"]),
        ("th", "ทันตกรรม", &[]),
    ];
    let mut failures = Vec::new();
    for (cc, q, expected) in expectations {
        let found = search(&dev, &patient, cc, q);
        if found != *expected {
            failures.push(format!("/{cc}/v1 search {q}: {found:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Each country's practitioners stay in their country.
    assert_eq!(search(&dev, &patient, "jp", "ابراهيم"), Vec::<String>::new());
    dev.interrupt();
}
