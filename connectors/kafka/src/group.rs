//! A worker's membership of its consumer group (`[source.kafka] group`):
//! the group (cooperative-sticky) shares the tables' partitions among the
//! workers; each reads its share from the tables' committed offsets and
//! commits partition claims (`tributary_core::partitions`).
//!
//! The membership outlives a run: a run ends at every change of this
//! worker's partitions (`Reassigned`), and the next run seeks the new share
//! to the offsets its tables hold then. Leaving and joining again at each
//! run would only cause the next rebalance.

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use tracing::{info, warn};
use tributary_core::Result;

use crate::client::kafka_err;

/// Counts the rebalances this member went through; partitions it is given
/// stay paused until a run has sought them to their tables' offsets.
#[derive(Default)]
pub struct GroupContext {
    generation: AtomicU64,
}

impl GroupContext {
    /// How many assignments and revocations happened so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(
                    partitions = tpl.count(),
                    "the group assigned partitions to this worker"
                );
                // Read from nowhere until a run seeks them (the group's own
                // offsets are never committed, the tables hold them).
                if let Err(e) = consumer.pause(tpl) {
                    warn!(error = %e, "pausing newly assigned partitions");
                }
            }
            Rebalance::Revoke(tpl) => {
                info!(
                    partitions = tpl.count(),
                    "the group took partitions from this worker"
                );
            }
            Rebalance::Error(e) => warn!(error = %e, "consumer group rebalance failed"),
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

pub type RelayStream = StreamConsumer<GroupContext>;

/// This process's member of the group, and the topics it subscribed.
pub struct GroupMember {
    pub consumer: std::sync::Arc<RelayStream>,
    pub topics: Vec<String>,
}

impl GroupMember {
    /// Joins `group` (cooperative-sticky) subscribed to `topics`.
    pub fn join(client: &ClientConfig, group: &str, topics: Vec<String>) -> Result<GroupMember> {
        let consumer: RelayStream = client
            .clone()
            .set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(GroupContext::default())
            .map_err(|e| kafka_err("consumer", e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| kafka_err("subscribing", e))?;
        info!(group, topics = topics.len(), "joined the consumer group");
        Ok(GroupMember {
            consumer: std::sync::Arc::new(consumer),
            topics,
        })
    }
}
