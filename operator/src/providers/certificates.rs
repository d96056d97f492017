//! The certificates of an `inCluster` stack: a CA per Region, made once and kept in a
//! Secret of the Region's namespace, and a server certificate for each store's Service
//! names, signed by it and made again when it nears its end. ECDSA P-256 (rcgen with ring,
//! as rustls here), keys in PKCS#8 PEM, which PostgreSQL and OpenSearch both read.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, NaiveDate, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

use super::ProviderError;

/// How long a CA is valid. Not renewed by the operator: see the README.
const CA_YEARS: i32 = 10;
/// How long a server certificate is valid.
const SERVER_DAYS: u64 = 2 * 365;
/// A server certificate is made again once fewer days than this are left.
const RENEW_DAYS: u64 = 60;

/// Secret keys (as cert-manager and `kubernetes.io/tls` name them).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
/// The last day a server certificate is valid, `YYYY-MM-DD`, kept beside it.
pub const EXPIRES: &str = "expires";

fn failed(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(
        "CertificateFailed",
        format!("cannot make the stack's certificates: {e}"),
    )
}

/// A Region's CA: its certificate and key, PEM. (`Debug` leaves the key out.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A server certificate and key, PEM, with its last day. (`Debug` leaves the key out.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub expires: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert_pem", &self.cert_pem)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// `date`, midnight UTC, as rcgen takes it.
macro_rules! day {
    ($date:expr) => {{
        let date: NaiveDate = $date;
        rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8)
    }};
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// The CA's subject and usages: the same every time, so that a CA read back from its
/// Secret signs exactly as the one first made.
fn ca_params(region: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Meridian");
    name.push(DnType::CommonName, format!("meridian Region {region} CA"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    /// A new CA for `region`.
    pub fn generate(region: &str) -> Result<Self, ProviderError> {
        let key = KeyPair::generate().map_err(failed)?;
        let today = Utc::now().date_naive();
        let mut params = ca_params(region);
        params.not_before = day!(today - Days::new(1));
        params.not_after = day!(
            today
                .with_year(today.year() + CA_YEARS)
                .unwrap_or(today + Days::new(3650))
        );
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(failed)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA kept in a Secret's `data`, if it holds one whose key reads back.
    pub fn from_secret(data: &BTreeMap<String, String>) -> Option<Self> {
        let (cert_pem, key_pem) = (data.get(CA_CERT)?, data.get(CA_KEY)?);
        KeyPair::from_pem(key_pem).ok()?;
        Some(Self {
            cert_pem: cert_pem.clone(),
            key_pem: key_pem.clone(),
        })
    }

    /// A server certificate for `names` (DNS names), signed by this CA of `region`.
    pub fn issue(&self, region: &str, names: &[String]) -> Result<ServerCert, ProviderError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(failed)?;
        let issuer = Issuer::new(ca_params(region), ca_key);
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(failed)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Meridian");
        name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        // Server for clients; client too, as OpenSearch's own transport layer presents it.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let today = Utc::now().date_naive();
        let last = today + Days::new(SERVER_DAYS);
        params.not_before = day!(today - Days::new(1));
        params.not_after = day!(last);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &issuer).map_err(failed)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            expires: last.to_string(),
        })
    }
}

impl ServerCert {
    /// The server certificate kept in a Secret's `data`, if it was signed by `ca`, names
    /// `names` (as recorded beside it) and is not near its end; otherwise `None`, and a new
    /// one is made.
    pub fn reusable(data: &BTreeMap<String, String>, ca: &Ca, names: &[String]) -> Option<Self> {
        if data.get(CA_CERT) != Some(&ca.cert_pem) || data.get("names") != Some(&names.join(",")) {
            return None;
        }
        let expires: NaiveDate = data.get(EXPIRES)?.parse().ok()?;
        if expires < Utc::now().date_naive() + Days::new(RENEW_DAYS) {
            return None;
        }
        Some(Self {
            cert_pem: data.get(TLS_CERT)?.clone(),
            key_pem: data.get(TLS_KEY)?.clone(),
            expires: expires.to_string(),
        })
    }
}
