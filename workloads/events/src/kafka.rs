//! How a process of a Region reaches the Region's Kafka: bootstrap servers, and for an
//! `external` or `aws` broker, TLS (with the CA that signed the brokers' certificates) and
//! SASL credentials. The same options serve the relay, the consumers and the operator's
//! topic administration.

use std::path::PathBuf;

use rdkafka::ClientConfig;

pub use meridian_crds::SaslMechanism;

/// `--kafka-sasl-mechanism`, spelled as a Region's `spec.events.sasl.mechanism` is.
fn mechanism(value: &str) -> Result<SaslMechanism, String> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| format!("{value:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// Where the Region's Kafka is and how to authenticate to it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KafkaOptions {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(long = "kafka-bootstrap", env = "MERIDIAN_KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    /// Speak TLS to the brokers, verifying their certificates against this CA (PEM). Without
    /// it, TLS is used only with `--kafka-tls`, against the system's roots.
    #[arg(long = "kafka-ca-file", env = "MERIDIAN_KAFKA_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Speak TLS to the brokers (implied by `--kafka-ca-file`).
    #[arg(long = "kafka-tls", env = "MERIDIAN_KAFKA_TLS")]
    pub tls: bool,
    /// SASL mechanism; needs `--kafka-username` and `--kafka-password-file`.
    #[arg(long = "kafka-sasl-mechanism", env = "MERIDIAN_KAFKA_SASL_MECHANISM", value_parser = mechanism)]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[arg(long = "kafka-username", env = "MERIDIAN_KAFKA_USERNAME")]
    pub username: Option<String>,
    /// A file holding the SASL password (a mounted Secret), never the password itself.
    #[arg(long = "kafka-password-file", env = "MERIDIAN_KAFKA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
}

/// Options that do not make a way to the brokers.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--kafka-bootstrap names no server")]
    NoBootstrap,
    #[error("--kafka-sasl-mechanism {0} needs --kafka-username and --kafka-password-file")]
    IncompleteSasl(&'static str),
    #[error("--kafka-username and --kafka-password-file need --kafka-sasl-mechanism")]
    CredentialsWithoutMechanism,
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
}

/// How a client reaches the brokers, as values: what [`KafkaOptions`] read from flags and
/// files, or what the operator read from a Region's Secrets.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub bootstrap: String,
    pub tls: bool,
    pub ca: Option<Ca>,
    pub sasl: Option<Sasl>,
}

/// The CA the brokers' certificates are verified against.
#[derive(Clone, Debug)]
pub enum Ca {
    File(PathBuf),
    Pem(String),
}

/// SASL credentials.
#[derive(Clone)]
pub struct Sasl {
    pub mechanism: &'static str,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The librdkafka settings shared by every client.
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        if self.bootstrap.split(',').all(|s| s.trim().is_empty()) {
            return Err(ConfigError::NoBootstrap);
        }
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        let tls = self.tls || self.ca.is_some();
        match &self.ca {
            Some(Ca::File(path)) => {
                config.set("ssl.ca.location", path.display().to_string());
            }
            Some(Ca::Pem(pem)) => {
                config.set("ssl.ca.pem", pem);
            }
            None => {}
        }
        if tls {
            config.set("enable.ssl.certificate.verification", "true");
            config.set("ssl.endpoint.identification.algorithm", "https");
        }
        let protocol = match &self.sasl {
            Some(sasl) => {
                config.set("sasl.mechanism", sasl.mechanism);
                config.set("sasl.username", &sasl.username);
                config.set("sasl.password", &sasl.password);
                if tls { "SASL_SSL" } else { "SASL_PLAINTEXT" }
            }
            None if tls => "SSL",
            None => "PLAINTEXT",
        };
        config.set("security.protocol", protocol);
        Ok(config)
    }
}

impl KafkaOptions {
    /// Plain TCP to `bootstrap` (tests).
    pub fn plaintext(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            ..Self::default()
        }
    }

    /// The connection the options describe (the password read from its file).
    pub fn connection(&self) -> Result<Connection, ConfigError> {
        let sasl = match (&self.sasl_mechanism, &self.username, &self.password_file) {
            (Some(mechanism), Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                    path: file.display().to_string(),
                    source,
                })?;
                Some(Sasl {
                    mechanism: mechanism.as_str(),
                    username: user.clone(),
                    password: password.trim_end_matches(['\n', '\r']).to_string(),
                })
            }
            (Some(mechanism), _, _) => return Err(ConfigError::IncompleteSasl(mechanism.as_str())),
            (None, None, None) => None,
            (None, _, _) => return Err(ConfigError::CredentialsWithoutMechanism),
        };
        Ok(Connection {
            bootstrap: self.bootstrap.clone(),
            tls: self.tls,
            ca: self.ca_file.clone().map(Ca::File),
            sasl,
        })
    }

    /// The librdkafka settings shared by every client.
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        self.connection()?.client_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_make_sasl_and_a_ca_makes_tls() {
        let dir = std::env::temp_dir().join(format!("meridian-kafka-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let options = KafkaOptions {
            bootstrap: "b-1.example:9096".into(),
            ca_file: Some(dir.join("ca.pem")),
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("relay".into()),
            password_file: Some(password),
            ..KafkaOptions::default()
        };
        let config = options.client_config().unwrap();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        let plain = KafkaOptions::plaintext("127.0.0.1:9092").client_config().unwrap();
        assert_eq!(plain.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(mechanism("SCRAM-SHA-256"), Ok(SaslMechanism::ScramSha256));
        assert!(mechanism("scram").is_err());
        let half = KafkaOptions {
            sasl_mechanism: Some(SaslMechanism::Plain),
            ..KafkaOptions::plaintext("127.0.0.1:9092")
        };
        assert!(matches!(
            half.client_config(),
            Err(ConfigError::IncompleteSasl("PLAIN"))
        ));
        assert!(matches!(
            KafkaOptions::plaintext(" ").client_config(),
            Err(ConfigError::NoBootstrap)
        ));
        // What the operator reads from a Region's Secrets: the CA as PEM, no file.
        let from_secrets = Connection {
            bootstrap: "b-1.msk.example:9096".into(),
            ca: Some(Ca::Pem("-----BEGIN CERTIFICATE-----".into())),
            ..Connection::default()
        }
        .client_config()
        .unwrap();
        assert_eq!(from_secrets.get("security.protocol"), Some("SSL"));
        assert_eq!(from_secrets.get("ssl.ca.pem"), Some("-----BEGIN CERTIFICATE-----"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
