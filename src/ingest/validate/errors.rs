//! What a refused request says: [`Invalid`], and for items with bad
//! fields their [`ItemError`]s, at most [`MAX_ERRORS`] of them listed.

use std::fmt;

/// One problem with one item (or with a field of a single-object body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The item's position in the request's array; `None` for a body that is
    /// one object.
    pub(crate) index: Option<usize>,
    /// Path of the field, e.g. `series[3].points[0].timestamp` or `status`;
    /// empty when the item itself is wrong.
    pub(crate) field: String,
    pub(crate) message: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "item {i}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a request was refused; nothing of it may be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not JSON, or not the top-level shape this endpoint takes.
    #[error("{0}")]
    Body(String),
    /// Items with invalid fields: at most `MAX_ERRORS` listed, `more` not.
    #[error("{}", self.messages().join("; "))]
    Items { errors: Vec<ItemError>, more: usize },
    /// One item is larger than Datadog accepts for a single item, even alone.
    #[error("item {index}: {size} bytes; Datadog accepts at most {limit} bytes per item")]
    ItemTooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },
    /// More items in one request than Datadog accepts in one request.
    #[error("{items} items in one request; Datadog accepts at most {limit}")]
    TooManyItems { items: usize, limit: usize },
}

impl Invalid {
    /// The strings for Datadog's `{"errors":[...]}` response body.
    pub(crate) fn messages(&self) -> Vec<String> {
        match self {
            Invalid::Items { errors, more } => {
                let mut out: Vec<String> = errors.iter().map(ToString::to_string).collect();
                if *more > 0 {
                    out.push(format!("+{more} more"));
                }
                out
            }
            other => vec![other.to_string()],
        }
    }
}

/// How many item errors a response lists; a client that sends 50,000 bad
/// series needs the pattern, not 50,000 lines.
pub(crate) const MAX_ERRORS: usize = 100;

#[derive(Default)]
pub(super) struct Errors {
    pub(super) list: Vec<ItemError>,
    pub(super) more: usize,
}
