//! The topics of a Region's Kafka: one per outbox topic (the analytics job's results among
//! them), and a dead-letter topic (`<topic>.dlq`) beside each. The operator creates them
//! through the Kafka admin API; creating one that exists changes nothing (its partitions and
//! retention are never shrunk or rewritten from here: that could drop events).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use meridian_shared::outbox::OUTBOX_TOPICS;

/// The dead-letter topic of `topic`.
pub fn dlq(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Every topic of a Region, dead-letter topics included.
pub fn region_topics() -> Vec<String> {
    OUTBOX_TOPICS.iter().flat_map(|t| [t.to_string(), dlq(t)]).collect()
}

/// How the Region's topics are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long the broker keeps events (`retention.ms`).
    pub retention: Duration,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 6,
            replication_factor: 1,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What [`ensure`] did to one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Existed,
}

/// Creates the Region's topics that are missing; returns each topic's outcome.
pub async fn ensure(config: &ClientConfig, settings: &TopicSettings) -> Result<Vec<(String, Outcome)>, String> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let names = region_topics();
    let retention = settings.retention.as_millis().to_string();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
            .set("retention.ms", &retention)
        })
        .collect();
    // Bounded: a broker out of reach must not hold a reconcile for librdkafka's minute.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(topics.iter(), &options)
        .await
        .map_err(|e| format!("the Kafka admin API refused to create topics: {e}"))?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(name) => Ok((name, Outcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => Ok((name, Outcome::Existed)),
            Err((name, code)) => Err(format!("topic {name} could not be created: {code}")),
        })
        .collect()
}

/// Deletes `names` (those a Region created, when it goes with `deletionPolicy: Delete`);
/// a topic already gone is not an error.
pub async fn delete(config: &ClientConfig, names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(&names, &options)
        .await
        .map_err(|e| format!("the Kafka admin API refused to delete topics: {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => return Err(format!("topic {name} could not be deleted: {code}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_topic_has_its_dead_letter_topic() {
        let topics = super::region_topics();
        assert_eq!(topics.len(), 8);
        for topic in [
            "practitioner-events",
            "appointment-events",
            "patient-events",
            "analytics-results",
        ] {
            assert!(topics.contains(&topic.to_string()));
            assert!(topics.contains(&format!("{topic}.dlq")));
        }
    }
}
