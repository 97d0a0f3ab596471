//! MySQL character sets → how to turn column bytes into UTF-8.
//!
//! The server's own `information_schema.COLLATIONS` maps the collation ids
//! that table maps carry to charset names, so every flavor and version is
//! covered without a hard-coded id table.

use std::collections::HashMap;

use encoding_rs::Encoding;
use mysql_async::prelude::Queryable;
use tributary_core::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charset {
    /// `binary`: the column holds bytes, not text.
    Binary,
    /// utf8mb3/utf8mb4: already UTF-8.
    Utf8 { max_bytes: u8 },
    /// A legacy single- or multi-byte charset decoded with encoding_rs.
    Legacy {
        encoding: &'static Encoding,
        max_bytes: u8,
    },
}

impl Charset {
    pub(crate) fn max_bytes_per_char(self) -> usize {
        match self {
            Charset::Binary => 1,
            Charset::Utf8 { max_bytes } | Charset::Legacy { max_bytes, .. } => {
                max_bytes.max(1) as usize
            }
        }
    }

    /// Maps a MySQL charset name; `None` if no decoder exists for it.
    pub(crate) fn from_mysql_name(name: &str, max_bytes: u8) -> Option<Charset> {
        let label = match name {
            "binary" => return Some(Charset::Binary),
            "utf8" | "utf8mb3" | "utf8mb4" => return Some(Charset::Utf8 { max_bytes }),
            // MySQL's latin1 is really cp1252; ascii is a subset of it.
            "latin1" | "ascii" => "windows-1252",
            "latin2" => "iso-8859-2",
            "latin5" => "iso-8859-9",
            "latin7" => "iso-8859-13",
            "greek" => "iso-8859-7",
            "hebrew" => "iso-8859-8",
            "koi8r" => "koi8-r",
            "koi8u" => "koi8-u",
            "cp1250" | "cp1251" | "cp1256" | "cp1257" | "cp866" => name,
            "sjis" | "cp932" => "shift_jis",
            "ujis" | "eucjpms" => "euc-jp",
            "euckr" => "euc-kr",
            "gbk" | "gb2312" => "gbk",
            "gb18030" => "gb18030",
            "big5" => "big5",
            "ucs2" | "utf16" => "utf-16be",
            "utf16le" => "utf-16le",
            _ => return None,
        };
        Encoding::for_label(label.as_bytes()).map(|encoding| Charset::Legacy {
            encoding,
            max_bytes,
        })
    }
}

/// Collation id → charset, as the server reports it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CharsetMap {
    by_id: HashMap<u16, (String, Option<Charset>)>,
}

impl CharsetMap {
    pub(crate) async fn load(conn: &mut mysql_async::Conn) -> Result<CharsetMap> {
        let rows: Vec<(u16, String, u8)> = conn
            .query(
                "SELECT co.ID, co.CHARACTER_SET_NAME, cs.MAXLEN \
                 FROM information_schema.COLLATIONS co \
                 JOIN information_schema.CHARACTER_SETS cs USING (CHARACTER_SET_NAME) \
                 WHERE co.ID IS NOT NULL",
            )
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Connection, "cannot read the server's collations")
                    .with_source(e)
            })?;
        let by_id = rows
            .into_iter()
            .map(|(id, name, max)| {
                let cs = Charset::from_mysql_name(&name, max);
                (id, (name, cs))
            })
            .collect();
        Ok(CharsetMap { by_id })
    }

    pub(crate) fn get(&self, id: u16) -> std::result::Result<Charset, String> {
        match self.by_id.get(&id) {
            Some((_, Some(cs))) => Ok(*cs),
            Some((name, None)) => Err(format!(
                "character set {name} (collation {id}) has no decoder"
            )),
            None => Err(format!("unknown collation id {id}")),
        }
    }
}
