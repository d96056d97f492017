//! `meridian events dlq list|replay`: what the Region's consumers gave up on, and sending it
//! back to the topic it came from once the cause is fixed. A replayed event keeps its event
//! ID, so consumers that had applied it already find it in their inbox and skip it; only
//! the consumer that failed applies it now.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::topics;

/// Headers a dead-lettered event carries besides its own.
pub mod headers {
    pub const CONSUMER: &str = "dlq-consumer";
    pub const ERROR: &str = "dlq-error";
    pub const ATTEMPTS: &str = "dlq-attempts";
    pub const TOPIC: &str = "dlq-topic";
    /// Set by `meridian events dlq replay`: apply the event although it was given up on.
    pub const REPLAYED: &str = "dlq-replayed";
}
use headers as dlq_headers;

/// Sends an event on to another topic, as a dead letter or back from one: with its own
/// headers (less the `dlq-` ones of an earlier trip) and `extra` ones, its key and payload
/// as they were. Idempotent, acknowledged by every replica.
pub struct Forwarder {
    producer: FutureProducer,
}

impl Forwarder {
    pub fn new(kafka: &ClientConfig) -> anyhow::Result<Self> {
        let mut config = kafka.clone();
        config.set("enable.idempotence", "true").set("acks", "all");
        Ok(Self {
            producer: config.create()?,
        })
    }

    pub async fn forward(
        &self,
        topic: &str,
        own: &[(&str, Option<&[u8]>)],
        extra: &[(&str, &str)],
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in own.iter().filter(|(k, _)| !k.starts_with("dlq-")) {
            headers = headers.insert(Header { key, value: *value });
        }
        for (key, value) in extra {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// The consumer group that remembers which dead letters were replayed.
pub const REPLAY_GROUP: &str = "meridian-dlq-replay";

/// One dead-lettered event.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub dlq_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub headers: BTreeMap<String, String>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl DeadLetter {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("-", String::as_str)
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "{}[{}]@{}  event {}  {}  consumer {}  attempts {}  error: {}",
            self.dlq_topic,
            self.partition,
            self.offset,
            self.header(crate::relay::headers::EVENT_ID),
            self.header(crate::relay::headers::EVENT_TYPE),
            self.header(dlq_headers::CONSUMER),
            self.header(dlq_headers::ATTEMPTS),
            self.header(dlq_headers::ERROR),
        )
    }
}

fn dlq_topics() -> Vec<String> {
    topics::region_topics()
        .into_iter()
        .filter(|t| t.ends_with(".dlq"))
        .collect()
}

/// Reads the dead-letter topics from `group`'s committed offsets (the beginning for a new
/// group) up to their current ends.
fn read(kafka: &ClientConfig, group: &str) -> anyhow::Result<(BaseConsumer, Vec<DeadLetter>)> {
    let mut config = kafka.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = config.create()?;
    let timeout = Duration::from_secs(10);
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for topic in dlq_topics() {
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
                if high > low {
                    ends.insert((topic.clone(), p.id()), high);
                    assignment.add_partition(&topic, p.id());
                }
            }
        }
    }
    if ends.is_empty() {
        return Ok((consumer, Vec::new()));
    }
    // Where the group stands, else the beginning.
    let committed = consumer.committed_offsets(assignment.clone(), timeout)?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start.add_partition_offset(element.topic(), element.partition(), offset)?;
        if let Offset::Offset(o) = element.offset()
            && o >= ends[&(element.topic().to_string(), element.partition())]
        {
            ends.remove(&(element.topic().to_string(), element.partition()));
        }
    }
    consumer.assign(&start)?;
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the dead-letter topics were not read to their end within 30 s"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let at = (message.topic().to_string(), message.partition());
        if ends.get(&at).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&at);
        }
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|h| Some((h.key.to_string(), String::from_utf8(h.value?.to_vec()).ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        letters.push(DeadLetter {
            dlq_topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            headers,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        });
    }
    Ok((consumer, letters))
}

/// Every dead letter of the Region, oldest first per partition.
pub fn list(kafka: &ClientConfig) -> anyhow::Result<Vec<DeadLetter>> {
    let group = format!("meridian-dlq-list-{}", uuid::Uuid::new_v4());
    Ok(read(kafka, &group)?.1)
}

/// Sends every dead letter not replayed before back to its topic; returns them. (The
/// consumer's calls block: they run on the blocking pool, not on the async workers.)
pub async fn replay(kafka: &ClientConfig) -> anyhow::Result<Vec<DeadLetter>> {
    let (consumer, letters) = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || read(&kafka, REPLAY_GROUP)
    })
    .await??;
    let consumer = std::sync::Arc::new(consumer);
    let forwarder = Forwarder::new(kafka)?;
    for letter in &letters {
        let topic = letter
            .headers
            .get(dlq_headers::TOPIC)
            .cloned()
            .unwrap_or_else(|| letter.dlq_topic.trim_end_matches(".dlq").to_string());
        let own: Vec<(&str, Option<&[u8]>)> = letter
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
            .collect();
        // Applied by the consumer that gave up, although it did.
        let replayed_at = chrono::Utc::now().to_rfc3339();
        forwarder
            .forward(
                &topic,
                &own,
                &[(dlq_headers::REPLAYED, &replayed_at)],
                letter.key.as_deref(),
                letter.payload.as_deref(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("replaying {} to {topic}: {e}", letter.line()))?;
        // Replayed: the group moves past it.
        let mut done = TopicPartitionList::new();
        done.add_partition_offset(&letter.dlq_topic, letter.partition, Offset::Offset(letter.offset + 1))?;
        let consumer = consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&done, CommitMode::Sync)).await??;
    }
    Ok(letters)
}

/// `meridian events dlq ...`
#[derive(clap::Subcommand, Clone, Debug)]
pub enum DlqCommand {
    /// Lists the Region's dead-lettered events: consumer, error, attempts.
    List {
        #[command(flatten)]
        kafka: crate::kafka::KafkaOptions,
    },
    /// Sends the dead letters not replayed before back to their topics.
    Replay {
        #[command(flatten)]
        kafka: crate::kafka::KafkaOptions,
    },
}

/// Runs a `meridian events dlq` command; returns what it prints.
pub async fn run(command: DlqCommand) -> anyhow::Result<String> {
    match command {
        DlqCommand::List { kafka } => {
            let kafka = kafka.client_config()?;
            let letters = tokio::task::spawn_blocking(move || list(&kafka)).await??;
            let mut out: String = letters.iter().map(|l| l.line() + "\n").collect();
            out.push_str(&format!("{} dead-lettered event(s)\n", letters.len()));
            Ok(out)
        }
        DlqCommand::Replay { kafka } => {
            let letters = replay(&kafka.client_config()?).await?;
            let mut out: String = letters.iter().map(|l| format!("replayed {}\n", l.line())).collect();
            out.push_str(&format!("{} event(s) replayed\n", letters.len()));
            Ok(out)
        }
    }
}
