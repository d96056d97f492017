//! The `aws` provider's search: an Amazon OpenSearch Service domain per Region through
//! `aws-sdk-opensearch`, with encryption at rest, node-to-node encryption and HTTPS
//! enforced, sized from `spec.search`, tagged for the Region and the operator. Like the
//! database: adopts what it finds with its tags, refuses a domain tagged for another
//! Region, reports progress instead of waiting, applies a new size as a modification, and
//! deletes only with `deletionPolicy: Delete`.
//!
//! Fine-grained access control is on, with an internal master user (`meridian`) whose
//! password the caller keeps: the operator and the Region's workloads authenticate with it
//! over HTTPS (basic auth), so they need no SigV4 signing and no domain access policy.

use aws_sdk_opensearch::error::DisplayErrorContext;
use aws_sdk_opensearch::types::{
    AdvancedSecurityOptionsInput, ClusterConfig, DomainEndpointOptions, DomainStatus, EbsOptions,
    EncryptionAtRestOptions, MasterUserOptions, NodeToNodeEncryptionOptions, OpenSearchPartitionInstanceType, Tag,
    VolumeType,
};
use meridian_crds::{DeletionPolicy, Region};

use super::aws::AwsError;

const REGION_TAG: &str = "meridian.dev/region";
const MANAGER_TAG: &str = "meridian.dev/managed-by";
const DEFAULT_INSTANCE: &str = "r6g.large.search";
const DEFAULT_COUNT: i32 = 2;
const DEFAULT_VOLUME_GIB: i32 = 100;
const ENGINE: &str = "OpenSearch_2.13";
/// The domain's internal master user.
pub const MASTER_USER: &str = "meridian";

/// Where the domain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchProgress {
    /// Just created, with the master password it was given.
    Created(String),
    Waiting(String),
    /// The domain's HTTPS endpoint.
    Available(String),
}

fn api<E: std::error::Error + 'static>(what: &str, error: E) -> AwsError {
    AwsError::Api(format!("{what}: {}", DisplayErrorContext(error)))
}

/// The domain's name for Region `name` (at most 28 characters, as OpenSearch Service
/// allows).
pub fn domain_name(name: &str) -> String {
    format!("meridian-{name}").chars().take(28).collect()
}

/// OpenSearch Service domains for Regions of provider `aws`.
pub struct AwsSearch {
    client: aws_sdk_opensearch::Client,
}

impl AwsSearch {
    pub fn new(client: aws_sdk_opensearch::Client) -> Self {
        Self { client }
    }

    fn sizing(region: &Region) -> (String, i32, i32) {
        let search = region.spec.search.clone().unwrap_or_default();
        (
            search.instance_type.unwrap_or_else(|| DEFAULT_INSTANCE.into()),
            search.instance_count.unwrap_or(DEFAULT_COUNT),
            search.volume_gib.unwrap_or(DEFAULT_VOLUME_GIB),
        )
    }

    fn security(password: &str) -> AdvancedSecurityOptionsInput {
        AdvancedSecurityOptionsInput::builder()
            .enabled(true)
            .internal_user_database_enabled(true)
            .master_user_options(
                MasterUserOptions::builder()
                    .master_user_name(MASTER_USER)
                    .master_user_password(password)
                    .build(),
            )
            .build()
    }

    /// Creates (with `password` for the master user), adopts or resizes the Region's domain.
    pub async fn ensure(&self, region: &Region, password: &str) -> Result<SearchProgress, AwsError> {
        let name = region.metadata.name.clone().unwrap_or_default();
        let domain = domain_name(&name);
        let (instance, count, volume) = Self::sizing(region);
        let cluster = ClusterConfig::builder()
            .instance_type(OpenSearchPartitionInstanceType::from(instance.as_str()))
            .instance_count(count)
            .build();
        let ebs = EbsOptions::builder()
            .ebs_enabled(true)
            .volume_type(VolumeType::Gp3)
            .volume_size(volume)
            .build();
        let status = self.describe(&domain).await?;
        let Some(status) = status else {
            self.client
                .create_domain()
                .domain_name(&domain)
                .engine_version(ENGINE)
                .cluster_config(cluster)
                .ebs_options(ebs)
                .encryption_at_rest_options(EncryptionAtRestOptions::builder().enabled(true).build())
                .node_to_node_encryption_options(NodeToNodeEncryptionOptions::builder().enabled(true).build())
                .domain_endpoint_options(DomainEndpointOptions::builder().enforce_https(true).build())
                .advanced_security_options(Self::security(password))
                .tag_list(tag(REGION_TAG, &name)?)
                .tag_list(tag(MANAGER_TAG, crate::FIELD_MANAGER)?)
                .send()
                .await
                .map_err(|e| api(&format!("create domain {domain}"), e))?;
            return Ok(SearchProgress::Created(format!("creating OpenSearch domain {domain}")));
        };
        let owner = self.owner(status.arn(), &domain).await?;
        if owner.as_deref() != Some(name.as_str()) {
            return Err(AwsError::NotOurs {
                kind: "OpenSearch domain",
                id: domain,
                owner,
                region: name,
            });
        }
        let current = status.cluster_config();
        let resized = current.and_then(|c| c.instance_type()).map(|t| t.as_str()) != Some(instance.as_str())
            || current.and_then(|c| c.instance_count()) != Some(count)
            || status.ebs_options().and_then(|e| e.volume_size()) != Some(volume);
        if resized {
            self.client
                .update_domain_config()
                .domain_name(&domain)
                .cluster_config(cluster)
                .ebs_options(ebs)
                .send()
                .await
                .map_err(|e| api(&format!("resize domain {domain}"), e))?;
            return Ok(SearchProgress::Waiting(format!(
                "resizing OpenSearch domain {domain} to {count} x {instance}, {volume} GiB"
            )));
        }
        if status.processing() == Some(true) || status.created() == Some(false) {
            return Ok(SearchProgress::Waiting(format!(
                "OpenSearch domain {domain} is processing"
            )));
        }
        let endpoint = status
            .endpoint()
            .map(String::from)
            .or_else(|| status.endpoints().and_then(|e| e.values().next().cloned()))
            .ok_or_else(|| AwsError::Api(format!("OpenSearch domain {domain} has no endpoint yet")))?;
        Ok(SearchProgress::Available(format!("https://{endpoint}")))
    }

    /// The Region a domain is tagged for.
    async fn owner(&self, arn: &str, domain: &str) -> Result<Option<String>, AwsError> {
        let tags = self
            .client
            .list_tags()
            .arn(arn)
            .send()
            .await
            .map_err(|e| api(&format!("list tags of domain {domain}"), e))?;
        Ok(tags
            .tag_list()
            .iter()
            .find(|t| t.key() == REGION_TAG)
            .map(|t| t.value().to_string()))
    }

    /// Turns on fine-grained access control with the master user's `password`: for an
    /// adopted domain, or when the password the operator keeps is not the one the domain got.
    pub async fn set_master_user(&self, region: &Region, password: &str) -> Result<(), AwsError> {
        let domain = domain_name(region.metadata.name.as_deref().unwrap_or_default());
        self.client
            .update_domain_config()
            .domain_name(&domain)
            .advanced_security_options(Self::security(password))
            .send()
            .await
            .map_err(|e| api(&format!("set the master user of domain {domain}"), e))?;
        Ok(())
    }

    /// The domain's status, or None when there is no domain of that name.
    async fn describe(&self, domain: &str) -> Result<Option<DomainStatus>, AwsError> {
        match self.client.describe_domain().domain_name(domain).send().await {
            Ok(out) => Ok(out.domain_status),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(api(&format!("describe domain {domain}"), e)),
        }
    }

    /// `Retain` leaves the domain; `Delete` deletes it.
    pub async fn release(&self, region: &Region) -> Result<(), AwsError> {
        if region.spec.deletion_policy != DeletionPolicy::Delete {
            return Ok(());
        }
        let name = region.metadata.name.clone().unwrap_or_default();
        let domain = domain_name(&name);
        // Only a domain tagged for this Region: another's, or an untagged one that merely
        // has the name, stays.
        let status = self.describe(&domain).await?;
        let Some(status) = status else {
            return Ok(());
        };
        let owner = self.owner(status.arn(), &domain).await?;
        if owner.as_deref() != Some(name.as_str()) {
            tracing::warn!(
                domain,
                ?owner,
                "not deleting an OpenSearch domain that is not tagged for this Region"
            );
            return Ok(());
        }
        match self.client.delete_domain().domain_name(&domain).send().await {
            Err(e)
                if !e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Err(api(&format!("delete domain {domain}"), e))
            }
            _ => Ok(()),
        }
    }
}

fn tag(key: &str, value: &str) -> Result<Tag, AwsError> {
    Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(|e| AwsError::Api(format!("tag {key}: {e}")))
}
