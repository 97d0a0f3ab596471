//! Which tables a source reads: `database.table` globs, shared by every
//! source kind (MySQL's tables, the relay's topics).

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::TableId;

/// Which tables a source reads: `database.table` globs (`*`, `?`, `[..]`).
/// Exclusions win; system schemas are always excluded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFilterConfig {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TableFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

impl TableFilter {
    pub fn new(config: &TableFilterConfig) -> Result<TableFilter> {
        let build = |patterns: &[String]| -> Result<GlobSet> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                let glob = Glob::new(p).map_err(|e| {
                    Error::invalid_config(format!("table filter {p:?} is not a valid glob: {e}"))
                })?;
                b.add(glob);
            }
            b.build()
                .map_err(|e| Error::invalid_config(format!("table filters: {e}")))
        };
        let include = if config.include.is_empty() {
            None
        } else {
            Some(build(&config.include)?)
        };
        Ok(TableFilter {
            include,
            exclude: build(&config.exclude)?,
        })
    }

    /// Whether `database.table` is read. Cheap enough to call per table map.
    pub fn matches(&self, database: &str, table: &str) -> bool {
        if SYSTEM_SCHEMAS.contains(&database) {
            return false;
        }
        let name = format!("{database}.{table}");
        self.include.as_ref().is_none_or(|i| i.is_match(&name)) && !self.exclude.is_match(&name)
    }

    pub fn matches_id(&self, id: &TableId) -> bool {
        self.matches(&id.database, &id.table)
    }
}
