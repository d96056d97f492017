//! PLACEHOLDER being replaced by the OpenSearch client (helper task in progress).
use crate::model::*;

pub struct Credentials {
    pub username: String,
    pub password: String,
}

pub struct OpenSearch;

impl OpenSearch {
    pub fn new(_endpoint: &str, _credentials: Option<Credentials>) -> Result<Self, SearchError> {
        Err(SearchError::Engine("not yet".into()))
    }
    pub async fn resolve(&self, _alias: &str) -> Result<Option<Resolved>, SearchError> {
        unimplemented!()
    }
    pub async fn create_index(&self, _index: &str, _settings: &IndexSettings) -> Result<(), SearchError> {
        unimplemented!()
    }
    pub async fn point_alias(&self, _alias: &str, _index: &str) -> Result<(), SearchError> {
        unimplemented!()
    }
    pub async fn delete_index(&self, _index: &str) -> Result<(), SearchError> {
        unimplemented!()
    }
    pub async fn versions(&self, _alias: &str) -> Result<Vec<String>, SearchError> {
        unimplemented!()
    }
    pub async fn upsert(&self, _alias: &str, _docs: &[Document]) -> Result<(), SearchError> {
        unimplemented!()
    }
    pub async fn fill(&self, _index: &str, _docs: &[Document]) -> Result<(), SearchError> {
        unimplemented!()
    }
    pub async fn search(&self, _alias: &str, _query: &Query) -> Result<Hits, SearchError> {
        unimplemented!()
    }
}
