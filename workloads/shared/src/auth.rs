//! Who is calling: OIDC bearer tokens (RS256 or ES256) checked against the issuer's JWKS,
//! with the roles and the countries a token may act in. Used by every workload; `meridian
//! dev` runs a [`DevIssuer`] that signs tokens for demo users.
//!
//! The algorithm comes from the key, never from the token's header, so a token cannot pick
//! a weaker algorithm (or `none`, or HMAC keyed with the public key) for itself.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a caller may do, in increasing reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Books and sees their own appointments and records.
    Patient,
    /// Sees their own schedule and their patients' appointments.
    Practitioner,
    /// Manages the practitioners of their countries.
    ClinicAdmin,
    /// Manages schedules and appointments of their practice.
    PracticeManager,
    /// Operates the platform.
    SystemAdmin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Patient,
        Role::Practitioner,
        Role::ClinicAdmin,
        Role::PracticeManager,
        Role::SystemAdmin,
    ];

    /// The name used in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "Patient",
            Role::Practitioner => "Practitioner",
            Role::ClinicAdmin => "ClinicAdmin",
            Role::PracticeManager => "PracticeManager",
            Role::SystemAdmin => "SystemAdmin",
        }
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims Meridian reads. `countries` holds ISO codes, or `*` for every country.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub countries: Vec<String>,
}

/// A token's `aud`: one audience, or an array of them (RFC 7519, section 4.1.3). A token is
/// for us when ours is among them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is one of the token's audiences.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Audience::One(audience.into())
    }
}

impl From<String> for Audience {
    fn from(audience: String) -> Self {
        Audience::One(audience)
    }
}

/// A verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub roles: BTreeSet<Role>,
    countries: BTreeSet<String>,
    /// The token's `exp`, in seconds since 1970.
    expires: u64,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the token may act in country `code` (ISO 3166-1 alpha-2, any case).
    pub fn may_act_in(&self, code: &str) -> bool {
        self.countries.contains("*") || self.countries.contains(&code.to_ascii_uppercase())
    }
}

/// Why a token was refused. Messages are safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the bearer token is not a JWT")]
    Malformed,
    #[error("the token's key id is not one of the issuer's keys")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    WrongAlgorithm,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token carries unknown role {0:?}")]
    UnknownRole(String),
    #[error("the issuer's key set is invalid: {0}")]
    BadKeySet(String),
}

/// Checks tokens of one issuer for one audience.
///
/// The issuer's keys can be replaced while requests are served (key rotation), and tokens
/// already verified are remembered until they expire: a caller sends the same token with
/// every request, and checking an ES256 signature costs more than the rest of a booking's
/// work in the service. The cache is keyed by the whole token, so only the very same bytes
/// skip the signature check, and it is emptied whenever the keys change.
pub struct Verifier {
    issuer: String,
    audience: String,
    keys: RwLock<Arc<Vec<Key>>>,
    verified: Mutex<HashMap<String, Principal>>,
}

/// A key of the issuer's set, with the one algorithm it verifies.
struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Seconds of clock skew accepted on `exp`.
const LEEWAY: u64 = 30;

/// Verified tokens remembered at most; beyond, the cache starts again from empty.
const REMEMBERED: usize = 50_000;

impl Verifier {
    /// From the issuer's JWKS document (`{"keys": [...]}`). RSA keys verify RS256, P-256
    /// keys ES256; other keys are refused.
    pub fn from_jwks(issuer: &str, audience: &str, jwks: &str) -> Result<Self, AuthError> {
        Ok(Self {
            issuer: issuer.into(),
            audience: audience.into(),
            keys: RwLock::new(Arc::new(parse_jwks(jwks)?)),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the issuer's keys with those of `jwks`; an invalid document changes nothing.
    /// Tokens signed by a key that is gone are refused from now on.
    pub fn replace_keys(&self, jwks: &str) -> Result<(), AuthError> {
        let keys = Arc::new(parse_jwks(jwks)?);
        *self.keys.write().expect("keys lock") = keys;
        self.verified.lock().expect("verified lock").clear();
        Ok(())
    }

    /// The key IDs currently trusted.
    pub fn key_ids(&self) -> Vec<String> {
        let keys = self.keys.read().expect("keys lock").clone();
        keys.iter().filter_map(|k| k.id.clone()).collect()
    }

    /// Verifies the value of an `Authorization` header.
    pub fn verify_header(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(AuthError::Missing)?;
        self.verify(token.trim())
    }

    /// Verifies a compact JWT and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        if let Some(known) = self.verified.lock().expect("verified lock").get(token)
            && known.expires + LEEWAY > now
        {
            return Ok(known.clone());
        }
        let principal = self.check_signature(token)?;
        let mut verified = self.verified.lock().expect("verified lock");
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(token.to_string(), principal.clone());
        Ok(principal)
    }

    fn check_signature(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let keys = self.keys.read().expect("keys lock").clone();
        let key = match &header.kid {
            Some(kid) => keys.iter().find(|k| k.id.as_deref() == Some(kid.as_str())),
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
        .ok_or(AuthError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(AuthError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                jsonwebtoken::errors::ErrorKind::InvalidAudience => AuthError::WrongAudience,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed,
            })?
            .claims;
        // The library checked it already; a token not addressed to us is never accepted.
        if !claims.aud.contains(&self.audience) {
            return Err(AuthError::WrongAudience);
        }
        let roles = claims
            .roles
            .iter()
            .map(|r| r.parse::<Role>().map_err(|()| AuthError::UnknownRole(r.clone())))
            .collect::<Result<_, _>>()?;
        let countries = claims.countries.iter().map(|c| c.to_ascii_uppercase()).collect();
        Ok(Principal {
            subject: claims.sub,
            roles,
            countries,
            expires: claims.exp,
        })
    }
}

fn parse_jwks(jwks: &str) -> Result<Vec<Key>, AuthError> {
    let set: JwkSet = serde_json::from_str(jwks).map_err(|e| AuthError::BadKeySet(e.to_string()))?;
    let keys = set
        .keys
        .iter()
        .map(|jwk| {
            Ok(Key {
                id: jwk.common.key_id.clone(),
                algorithm: algorithm_of(jwk)?,
                key: DecodingKey::from_jwk(jwk).map_err(|e| AuthError::BadKeySet(e.to_string()))?,
            })
        })
        .collect::<Result<Vec<_>, AuthError>>()?;
    if keys.is_empty() {
        return Err(AuthError::BadKeySet("no keys".into()));
    }
    Ok(keys)
}

fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, AuthError> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Ok(Algorithm::ES256),
        _ => Err(AuthError::BadKeySet(
            "only RSA (RS256) and P-256 (ES256) keys are accepted".into(),
        )),
    }
}

/// A local OIDC-style issuer for `meridian dev` and tests: one ES256 key made at start-up,
/// its JWKS, and tokens for whoever asks.
pub struct DevIssuer {
    issuer: String,
    audience: String,
    key: EncodingKey,
    key_id: String,
    jwks: String,
}

const DEV_KEY_ID: &str = "meridian-dev-1";

/// `exp` of a token valid for `ttl` from now.
fn expiry(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

impl DevIssuer {
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self::with_key_id(issuer, audience, DEV_KEY_ID)
    }

    /// An issuer whose key has ID `key_id`: two of them with different IDs are a key
    /// rotation.
    pub fn with_key_id(issuer: &str, audience: &str, key_id: &str) -> Self {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a fresh P-256 key encodes as PKCS#8");
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).expect("PKCS#8 PEM of a P-256 key");
        let mut public: serde_json::Value =
            serde_json::from_str(&secret.public_key().to_jwk_string()).expect("a JWK is JSON");
        public["kid"] = key_id.into();
        public["alg"] = "ES256".into();
        public["use"] = "sig".into();
        let jwks = serde_json::json!({ "keys": [public] });
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            key,
            key_id: key_id.into(),
            jwks: jwks.to_string(),
        }
    }

    /// The JWKS document, as served at the issuer's `jwks_uri`.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// A verifier for this issuer's tokens.
    pub fn verifier(&self) -> Verifier {
        Verifier::from_jwks(&self.issuer, &self.audience, &self.jwks).expect("the dev issuer's own JWKS is valid")
    }

    /// A token for `subject` with `roles` in `countries`, valid for `ttl`.
    pub fn token(&self, subject: &str, roles: &[Role], countries: &[&str], ttl: Duration) -> String {
        self.sign(&Claims {
            iss: self.issuer.clone(),
            sub: subject.into(),
            aud: self.audience.clone().into(),
            exp: expiry(ttl),
            roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
            countries: countries.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// A verifier for this issuer's tokens addressed to `audience` (another service's).
    pub fn verifier_for(&self, audience: &str) -> Verifier {
        Verifier::from_jwks(&self.issuer, audience, &self.jwks).expect("the dev issuer's own JWKS is valid")
    }

    /// A token for a service `subject` (no roles, no countries) addressed to `audience`, as
    /// a Kubernetes ServiceAccount token with that audience would be.
    pub fn service_token(&self, subject: &str, audience: &str, ttl: Duration) -> String {
        self.sign(&Claims {
            iss: self.issuer.clone(),
            sub: subject.into(),
            aud: audience.into(),
            exp: expiry(ttl),
            roles: Vec::new(),
            countries: Vec::new(),
        })
    }

    /// Signs arbitrary claims with this issuer's key.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signing with our own key")
    }
}
