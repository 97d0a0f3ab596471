//! The one error type of `tributary-core`: a kind to branch on, a message for
//! people, key/value context, and the underlying cause.

use std::fmt;

/// What went wrong, coarsely enough that callers can decide what to do
/// (retry, re-snapshot, fail the job, fix the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is wrong; the message says which setting and the fix.
    InvalidConfig,
    /// A value or record does not fit the schema it claims.
    InvalidData,
    /// Two schemas (or a schema and a batch) disagree.
    SchemaMismatch,
    /// The request is valid but not supported (yet, or by this server).
    Unsupported,
    /// The named thing (a table, a file) does not exist.
    NotFound,
    /// A server could not be reached or dropped the connection; usually retryable.
    Connection,
    /// Credentials were rejected.
    Authentication,
    /// The source no longer has the position asked for (purged binlog,
    /// unknown GTID): resume is impossible without a new snapshot.
    PositionLost,
    /// An optimistic commit lost a race; retrying on the new state may work.
    CommitConflict,
    /// A commit's validation failed: a concurrent change conflicts with it
    /// (e.g. new deletes for files a rewrite replaces). Re-plan; do not retry.
    ValidationFailed,
    /// Another process took over the target (a newer owner epoch committed
    /// to it): this one must stop writing.
    Fenced,
    /// The partitions a worker of a consumer group reads moved (a
    /// rebalance), or another worker committed one of them: start again at
    /// once from the targets' commits.
    Reassigned,
    /// Local or remote I/O failed.
    Io,
    /// A deadline passed.
    Timeout,
    /// A bug or an unexpected state.
    Unexpected,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid config",
            ErrorKind::InvalidData => "invalid data",
            ErrorKind::SchemaMismatch => "schema mismatch",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NotFound => "not found",
            ErrorKind::Connection => "connection",
            ErrorKind::Authentication => "authentication",
            ErrorKind::PositionLost => "position lost",
            ErrorKind::CommitConflict => "commit conflict",
            ErrorKind::ValidationFailed => "validation failed",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Reassigned => "reassigned",
            ErrorKind::Io => "io",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unexpected => "unexpected",
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Connection
                | ErrorKind::Timeout
                | ErrorKind::CommitConflict
                | ErrorKind::Reassigned
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error with a kind, a message, context and an optional cause.
///
/// Context values are shown to people: never put a secret in one.
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    source: Option<Cause>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    pub fn with_context(mut self, key: &'static str, value: impl ToString) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    pub fn with_source(mut self, source: impl Into<Cause>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The same error with `f` applied to every text it shows — message,
    /// context values and the cause (which becomes part of the message) —
    /// e.g. to redact values that must not be shown.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Self {
        let message = match &self.source {
            Some(cause) => format!("{}: {cause}", self.message),
            None => self.message.clone(),
        };
        Error {
            kind: self.kind,
            message: f(&message),
            context: self.context.iter().map(|(k, v)| (*k, f(v))).collect(),
            source: None,
        }
    }

    /// Shorthand for the most common kinds.
    pub fn invalid_data(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidData, message)
    }

    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug is what `unwrap()` and `?` in main print: keep it readable.
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::new(ErrorKind::InvalidData, "arrow").with_source(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(ErrorKind::InvalidData, "json").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_kind_message_context_and_cause() {
        let cause = std::io::Error::other("disk full");
        let e = Error::new(ErrorKind::Io, "cannot write manifest")
            .with_context("path", "/t/m.avro")
            .with_context("attempt", 3)
            .with_source(cause);
        assert_eq!(
            e.to_string(),
            "io: cannot write manifest (path: /t/m.avro, attempt: 3): disk full"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(!e.kind().is_transient());
        assert!(ErrorKind::Connection.is_transient());
    }
}
