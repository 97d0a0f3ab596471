//! The relay's schema registry: the compacted topic
//! `<prefix>.tributary-schemas` holds every table schema the producer wrote
//! rows with (Tributary's own `TableSchema`, exact — the Connect schemas in
//! the envelopes lose unsignedness, lengths and labels' order), keyed by a
//! schema id that each data message names in its `tributary.schema` header.
//! The producer records a schema, and waits for it, before the first message
//! that names it; so a consumer meeting an id it does not know yet finds it
//! by reading the registry to its end.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use tributary_core::{Error, ErrorKind, Result, TableSchema};

use crate::client::read_to_end;
use crate::envelope::DecimalMode;

/// The header naming a data message's schema id.
pub const SCHEMA_HEADER: &str = "tributary.schema";

/// The registry topic of `prefix`.
pub fn schema_topic(prefix: &str) -> String {
    format!("{prefix}.tributary-schemas")
}

/// A table's schema id: table, version and shape
/// (`db.table/v3-00c0ffee00c0ffee`).
pub fn schema_id(schema: &TableSchema) -> String {
    format!(
        "{}/v{}-{:016x}",
        schema.table,
        schema.version,
        schema.fingerprint()
    )
}

/// One registry entry: the schema and how its rows were encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredSchema {
    pub schema: TableSchema,
    pub schemas_enable: bool,
    pub decimal_mode: DecimalMode,
}

/// The registry as a consumer knows it.
#[derive(Default)]
pub struct SchemaRegistry {
    by_id: HashMap<String, Arc<RegisteredSchema>>,
}

impl SchemaRegistry {
    /// Reads the whole registry topic (it is small and compacted).
    pub async fn load(client: &ClientConfig, prefix: &str) -> Result<SchemaRegistry> {
        let (client, topic) = (client.clone(), schema_topic(prefix));
        tokio::task::spawn_blocking(move || {
            let mut by_id = HashMap::new();
            read_to_end(&client, &topic, |m| {
                let (Some(key), Some(value)) = (m.key(), m.payload()) else {
                    return Ok(());
                };
                let entry: RegisteredSchema = serde_json::from_slice(value).map_err(|e| {
                    Error::invalid_data(format!(
                        "{topic}: the entry {} is not a schema: {e}",
                        String::from_utf8_lossy(key)
                    ))
                })?;
                by_id.insert(String::from_utf8_lossy(key).into_owned(), Arc::new(entry));
                Ok(())
            })?;
            Ok(SchemaRegistry { by_id })
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("schema registry read: {e}")))?
    }

    pub fn get(&self, id: &str) -> Option<Arc<RegisteredSchema>> {
        self.by_id.get(id).cloned()
    }

    /// Every table with a registered schema, each with its newest one.
    pub fn newest(&self) -> Vec<Arc<RegisteredSchema>> {
        let mut newest: HashMap<&tributary_core::TableId, &Arc<RegisteredSchema>> = HashMap::new();
        for entry in self.by_id.values() {
            let t = &entry.schema.table;
            if newest
                .get(t)
                .is_none_or(|e| e.schema.version < entry.schema.version)
            {
                newest.insert(t, entry);
            }
        }
        let mut out: Vec<_> = newest.into_values().cloned().collect();
        out.sort_by(|a, b| a.schema.table.cmp(&b.schema.table));
        out
    }
}
