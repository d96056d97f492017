//! The PatientIndex as a records service reaches it: what the operator handed over in the
//! Region's `patient-index` Secret (keys, the index role's connection, linked countries),
//! with a pool to the index's database, kept current as the Secret changes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use crate::mpi::{IndexKeyError, Link};

/// The link and a pool to the index's database as the index role.
pub struct Linked {
    pub link: Link,
    pub index: PgPool,
}

/// The current link, shared by the service's handlers and its registrar; none while the
/// Region has no linked country.
#[derive(Clone, Default)]
pub struct IndexLink(Arc<RwLock<Option<Arc<Linked>>>>);

/// Connections a records service holds to the index.
const INDEX_CONNECTIONS: u32 = 4;

impl IndexLink {
    /// Takes the entries of the `patient-index` Secret; a pool is made again only when the
    /// index's URL or CA changed.
    pub fn set(&self, data: &BTreeMap<String, String>) -> Result<(), IndexKeyError> {
        let link = Link::from_secret(data)?;
        let mut current = self.0.write().expect("index link lock");
        *current = match link {
            None => None,
            Some(link) => {
                let index = match current.as_ref() {
                    Some(old) if old.link.url() == link.url() && old.link.ca == link.ca => old.index.clone(),
                    _ => match meridian_shared::tls::pg_options(link.url(), link.ca.as_deref()) {
                        Ok(options) => crate::pool_options(INDEX_CONNECTIONS).connect_lazy_with(options),
                        Err(e) => {
                            tracing::warn!(error = %e, "the PatientIndex's connection URL is refused");
                            return Ok(());
                        }
                    },
                };
                Some(Arc::new(Linked { link, index }))
            }
        };
        Ok(())
    }

    /// The link now, if any.
    pub fn get(&self) -> Option<Arc<Linked>> {
        self.0.read().expect("index link lock").clone()
    }
}
