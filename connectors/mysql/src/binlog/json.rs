//! MySQL 8 binary JSON → JSON text. MariaDB stores JSON as LONGTEXT, so this
//! path is only taken against MySQL — untested here (no MySQL server can run
//! in this project's test environment).

use mysql_common::binlog::jsonb;
use mysql_common::io::ParseBuf;
use tributary_core::{Error, ErrorKind, Result};

pub(crate) fn mysql_binary_json_to_text(raw: &[u8]) -> Result<String> {
    let bad = |what: String| {
        Error::new(
            ErrorKind::InvalidData,
            format!("cannot decode MySQL binary JSON: {what}"),
        )
    };
    if raw.is_empty() {
        // An empty value is how MySQL writes JSON 'null' in some row images.
        return Ok("null".into());
    }
    let value: jsonb::Value<'_> = ParseBuf(raw).parse(()).map_err(|e| bad(e.to_string()))?;
    let json = serde_json::Value::try_from(value).map_err(|e| bad(e.to_string()))?;
    Ok(json.to_string())
}
