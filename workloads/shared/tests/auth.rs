//! Bearer tokens: what is accepted, and every way a token is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meridian_shared::auth::{Audience, AuthError, Claims, DevIssuer, Role, Verifier};

const ISSUER: &str = "http://127.0.0.1:8080/auth";
const AUDIENCE: &str = "meridian";

fn issuer() -> DevIssuer {
    DevIssuer::new(ISSUER, AUDIENCE)
}

fn claims(exp_in_secs: i64) -> Claims {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    Claims {
        iss: ISSUER.into(),
        sub: "patient-1".into(),
        aud: AUDIENCE.into(),
        exp: (now + exp_in_secs) as u64,
        roles: vec!["Patient".into()],
        countries: vec!["de".into()],
    }
}

/// Re-encodes a token's header with `edit` applied, keeping payload and signature.
fn with_header(token: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
    edit(&mut header);
    parts[0] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    parts.join(".")
}

#[test]
fn a_dev_token_names_the_caller_its_roles_and_countries() {
    let issuer = issuer();
    let token = issuer.token(
        "admin-1",
        &[Role::ClinicAdmin, Role::Practitioner],
        &["DE", "at"],
        Duration::from_secs(600),
    );
    let who = issuer.verifier().verify(&token).unwrap();
    assert_eq!(who.subject, "admin-1");
    assert!(who.has_role(Role::ClinicAdmin) && who.has_role(Role::Practitioner) && !who.has_role(Role::SystemAdmin));
    assert!(who.may_act_in("de") && who.may_act_in("AT") && !who.may_act_in("FR"));
    let everywhere = issuer.token("ops", &[Role::SystemAdmin], &["*"], Duration::from_secs(60));
    assert!(issuer.verifier().verify(&everywhere).unwrap().may_act_in("GB"));
}

#[test]
fn the_header_must_carry_a_bearer_token() {
    let verifier = issuer().verifier();
    assert_eq!(verifier.verify_header(None), Err(AuthError::Missing));
    assert_eq!(
        verifier.verify_header(Some("Basic dXNlcjpwYXNz")),
        Err(AuthError::Missing)
    );
    assert_eq!(
        verifier.verify_header(Some("Bearer not-a-jwt")),
        Err(AuthError::Malformed)
    );
}

#[test]
fn expired_tampered_and_misaddressed_tokens_are_refused() {
    let issuer = issuer();
    let verifier = issuer.verifier();
    assert_eq!(verifier.verify(&issuer.sign(&claims(-120))), Err(AuthError::Expired));
    assert_eq!(
        verifier.verify(&issuer.sign(&Claims {
            aud: "other".into(),
            ..claims(60)
        })),
        Err(AuthError::WrongAudience)
    );
    assert_eq!(
        verifier.verify(&issuer.sign(&Claims {
            iss: "https://evil".into(),
            ..claims(60)
        })),
        Err(AuthError::WrongIssuer)
    );
    assert_eq!(
        verifier.verify(&issuer.sign(&Claims {
            roles: vec!["Root".into()],
            ..claims(60)
        })),
        Err(AuthError::UnknownRole("Root".into()))
    );

    // Same header and signature, a payload granting more countries.
    let token = issuer.sign(&claims(60));
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&Claims {
            countries: vec!["*".into()],
            ..claims(60)
        })
        .unwrap(),
    );
    parts[1] = &forged;
    assert_eq!(verifier.verify(&parts.join(".")), Err(AuthError::BadSignature));

    // Another issuer's key, even with the same key id.
    assert_eq!(
        verifier.verify(&DevIssuer::new(ISSUER, AUDIENCE).sign(&claims(60))),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn an_audience_array_is_accepted_when_it_names_us_and_refused_otherwise() {
    let issuer = issuer();
    let verifier = issuer.verifier();
    let with_aud = |aud: Audience| issuer.sign(&Claims { aud, ..claims(60) });
    let many = |names: &[&str]| Audience::Many(names.iter().map(|n| n.to_string()).collect());
    for ours in [many(&[AUDIENCE]), many(&["billing", AUDIENCE, "records"])] {
        let who = verifier
            .verify(&with_aud(ours.clone()))
            .unwrap_or_else(|e| panic!("{ours:?}: {e}"));
        assert_eq!(who.subject, "patient-1");
    }
    for theirs in [
        many(&["billing", "records"]),
        many(&[]),
        many(&["Meridian", "meridian "]),
    ] {
        assert_eq!(
            verifier.verify(&with_aud(theirs.clone())),
            Err(AuthError::WrongAudience),
            "{theirs:?}"
        );
    }
    // The array is what the token carries on the wire.
    let token = with_aud(many(&["billing", AUDIENCE]));
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["aud"], serde_json::json!(["billing", AUDIENCE]));

    // A token without an audience is for nobody, even signed by the right key.
    let (verifier, sign) = rsa_identity_provider();
    let mut addressed = serde_json::to_value(claims(60)).unwrap();
    addressed["aud"] = serde_json::json!(["billing", AUDIENCE]);
    assert!(verifier.verify(&sign(&addressed)).is_ok());
    addressed.as_object_mut().unwrap().remove("aud");
    assert!(verifier.verify(&sign(&addressed)).is_err());
}

#[test]
fn a_token_cannot_choose_its_own_algorithm() {
    let issuer = issuer();
    let verifier = issuer.verifier();
    let token = issuer.sign(&claims(60));
    for alg in ["HS256", "none", "RS256"] {
        let downgraded = with_header(&token, |h| h["alg"] = alg.into());
        assert!(verifier.verify(&downgraded).is_err(), "{alg} accepted");
    }
    assert_eq!(
        verifier.verify(&with_header(&token, |h| h["alg"] = "HS256".into())),
        Err(AuthError::WrongAlgorithm)
    );
    assert_eq!(
        verifier.verify(&with_header(&token, |h| h["kid"] = "rotated-away".into())),
        Err(AuthError::UnknownKey)
    );
}

/// An identity provider signing with RS256 (key `idp-1`): a verifier that knows it only
/// through its JWKS, and its signing function.
fn rsa_identity_provider() -> (Verifier, impl Fn(&serde_json::Value) -> String) {
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "kid": "idp-1", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
    }]});
    let verifier = Verifier::from_jwks(ISSUER, AUDIENCE, &jwks.to_string()).unwrap();
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(private.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("idp-1".into());
    (verifier, move |payload: &serde_json::Value| {
        jsonwebtoken::encode(&header, payload, &key).unwrap()
    })
}

#[test]
fn rs256_tokens_verify_against_an_rsa_jwks() {
    let (verifier, sign) = rsa_identity_provider();
    let token = sign(&serde_json::to_value(claims(60)).unwrap());
    let who = verifier.verify(&token).unwrap();
    assert!(who.has_role(Role::Patient) && who.may_act_in("DE"));
}

#[test]
fn key_sets_with_keys_we_do_not_accept_are_refused() {
    let hmac = r#"{"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}"#;
    assert!(matches!(
        Verifier::from_jwks(ISSUER, AUDIENCE, hmac),
        Err(AuthError::BadKeySet(_))
    ));
    assert!(matches!(
        Verifier::from_jwks(ISSUER, AUDIENCE, r#"{"keys": []}"#),
        Err(AuthError::BadKeySet(_))
    ));
    assert!(matches!(
        Verifier::from_jwks(ISSUER, AUDIENCE, "nope"),
        Err(AuthError::BadKeySet(_))
    ));
}

#[test]
fn rotating_the_keys_refuses_tokens_of_a_key_that_is_gone_even_after_they_were_accepted() {
    let (old, new) = (issuer(), issuer());
    let verifier = old.verifier();
    let token = old.token("patient-1", &[Role::Patient], &["DE"], Duration::from_secs(600));
    // Accepted twice: the second time from the cache of verified tokens.
    assert!(verifier.verify(&token).is_ok());
    assert!(verifier.verify(&token).is_ok());
    // Both dev issuers use the same key ID: the new key replaces the old one.
    verifier.replace_keys(new.jwks()).unwrap();
    assert_eq!(verifier.verify(&token), Err(AuthError::BadSignature));
    let fresh = new.token("patient-1", &[Role::Patient], &["DE"], Duration::from_secs(600));
    assert!(verifier.verify(&fresh).is_ok());
    // A broken key set changes nothing.
    assert!(matches!(
        verifier.replace_keys("{\"keys\": []}"),
        Err(AuthError::BadKeySet(_))
    ));
    assert!(verifier.verify(&fresh).is_ok());
}

#[test]
fn a_remembered_token_still_expires() {
    let issuer = issuer();
    let verifier = issuer.verifier();
    // Expired 29 s ago: inside the 30 s leeway, so accepted and remembered...
    let token = issuer.sign(&claims(-29));
    assert!(verifier.verify(&token).is_ok());
    // ...and refused once the leeway is over, although it is remembered.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
}
