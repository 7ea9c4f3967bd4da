//! Datadog's tag rules, for the tags a customer attaches to the
//! integration's data (per tenant, `PUT /v1/tenants/{t}/tags`) and for the
//! integration's source name (`[integration] source`).
//!
//! Rules (docs/datadog.md "Tags"): a tag starts with a letter; may hold
//! letters (Unicode), digits, `_`, `-`, `:`, `.` and `/`, other characters
//! becoming `_`; runs of `_` become one and a trailing `_` is removed; at
//! most 200 characters; lowercase; never ending in `:`. The relay applies
//! the conversions Datadog applies ([`normalize`]) and refuses what
//! Datadog would reject or mangle (an empty tag, one that does not start
//! with a letter, is too long or ends in `:`), naming the tag. It also
//! refuses the keys the partner log rules keep from users (`source`,
//! `service`) and the keys Datadog reserves for its own correlation
//! (`host`, `device`).
//!
//! [`Tags`] is a tenant's list ready to be added to items: at most
//! [`MAX_TAGS`], each with its key. Adding them is the item formats'
//! business (`ingest::validate`, `ingest::traces`); this module knows no
//! format, no HTTP and no store.

use std::fmt;

/// Most tags a tenant may have.
pub(crate) const MAX_TAGS: usize = 50;

/// Longest tag, in characters (docs/datadog.md "Tags").
pub(crate) const MAX_TAG_CHARS: usize = 200;

/// Tag keys a tenant's tags may not use: `source` and `service` are the
/// integration's, not editable by users (docs/datadog.md "Partner log
/// rules"); `host` and `device` are Datadog's own correlation keys
/// (docs/datadog.md "Tags").
pub(crate) const RESERVED_KEYS: [&str; 4] = ["source", "service", "host", "device"];

/// Longest integration source name, in characters: it is sent as the
/// `source:<name>` tag, which must fit [`MAX_TAG_CHARS`].
pub(crate) const MAX_SOURCE_CHARS: usize = MAX_TAG_CHARS - "source:".len();

/// Why a tag was refused; the message names the tag as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TagError {
    #[error("tag {0:?} is empty")]
    Empty(String),
    #[error("tag {0:?} must start with a letter")]
    Start(String),
    #[error("tag {0:?} is {1} characters once normalised; Datadog accepts at most {MAX_TAG_CHARS}")]
    TooLong(String, usize),
    #[error("tag {0:?} ends with `:`; give a value after the key, or no colon")]
    EndsWithColon(String),
    #[error("tag {0:?} uses the key `{1}`, which the integration sets and customers cannot")]
    Reserved(String, &'static str),
    #[error("{0} tags; at most {MAX_TAGS} are accepted")]
    TooMany(usize),
}

/// `raw` as Datadog stores it: trimmed, lowercase, characters outside
/// letters, digits and `_-:./` turned into `_`, runs of `_` made one, a
/// trailing `_` removed; or why it cannot be a tag.
pub(crate) fn normalize(raw: &str) -> Result<String, TagError> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars().flat_map(char::to_lowercase) {
        let c = if c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '/') {
            c
        } else {
            '_'
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    let given = || raw.to_string();
    if out.is_empty() {
        return Err(TagError::Empty(given()));
    }
    if !out.chars().next().is_some_and(char::is_alphabetic) {
        return Err(TagError::Start(given()));
    }
    let chars = out.chars().count();
    if chars > MAX_TAG_CHARS {
        return Err(TagError::TooLong(given(), chars));
    }
    if out.ends_with(':') {
        return Err(TagError::EndsWithColon(given()));
    }
    if let Some(key) = RESERVED_KEYS.into_iter().find(|k| key_of(&out) == *k) {
        return Err(TagError::Reserved(given(), key));
    }
    Ok(out)
}

/// A tag's key: what precedes its first `:` (the whole tag when it has
/// none, docs/datadog.md "Tags").
pub(crate) fn key_of(tag: &str) -> &str {
    tag.split_once(':').map_or(tag, |(k, _)| k)
}

/// Normalises a tenant's list: each tag by [`normalize`], duplicates
/// (after normalising) kept once, in the order given; at most
/// [`MAX_TAGS`].
pub(crate) fn normalize_list(raw: &[String]) -> Result<Vec<String>, TagError> {
    if raw.len() > MAX_TAGS {
        return Err(TagError::TooMany(raw.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for tag in raw {
        let tag = normalize(tag)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// Checks an integration source name: what Datadog's partner log rules
/// ask of `source` (docs/datadog.md "Partner log rules": the
/// integration's name, lowercase) and what a tag value may hold, since
/// Datadog turns it into the `source:<name>` tag. Lowercase letters,
/// digits, `_`, `-` and `.`, starting with a letter.
pub(crate) fn check_source(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("is empty; expected the integration's name, e.g. \"acme-cloud\"".into());
    };
    if !first.is_ascii_lowercase() {
        return Err(format!(
            "`{name}` must start with a lowercase letter (a-z); Datadog's partner log rules want the integration's name in lowercase"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "`{name}` holds {bad:?}; a source name is lowercase letters, digits, `_`, `-` and `.`"
        ));
    }
    if name.len() > MAX_SOURCE_CHARS {
        return Err(format!(
            "`{name}` is {} characters; at most {MAX_SOURCE_CHARS}",
            name.len()
        ));
    }
    Ok(())
}

/// A tenant's tags, normalised, ready to be added to items.
#[derive(Clone, PartialEq, Eq)]
pub struct Tags {
    list: Vec<String>,
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

impl Tags {
    /// A tenant's stored tags; `None` for none, so that a tenant without
    /// tags costs nothing where items are written. Each is normalised
    /// again (a no-op for what the admin API stored) and one that cannot
    /// be a tag is left out: whoever writes items may rely on every tag
    /// being one (no quote, backslash, comma or control character).
    pub fn new(list: Vec<String>) -> Option<Tags> {
        let list: Vec<String> = list.iter().filter_map(|t| normalize(t).ok()).collect();
        (!list.is_empty()).then_some(Tags { list })
    }

    pub(crate) fn as_slice(&self) -> &[String] {
        &self.list
    }

    /// The tags an item that already has `has` should get: those whose
    /// key it does not already have (the item's own tag wins; a tag without
    /// a value is its own key). Keys compare case-insensitively, as
    /// Datadog lowercases tags.
    pub(crate) fn missing_from<'a, S: AsRef<str>>(&'a self, has: &[S]) -> Vec<&'a str> {
        self.list
            .iter()
            .map(String::as_str)
            .filter(|t| {
                let key = key_of(t);
                !has.iter()
                    .any(|h| key_of(h.as_ref().trim()).to_lowercase() == key)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_as_datadog_makes_them() {
        assert_eq!(normalize("Team:Payments").unwrap(), "team:payments");
        assert_eq!(normalize(" a b  c ").unwrap(), "a_b_c");
        assert_eq!(normalize("a__b_").unwrap(), "a_b");
        assert_eq!(normalize("a,b\"c\\d").unwrap(), "a_b_c_d");
        assert_eq!(normalize("env:staging:east").unwrap(), "env:staging:east");
        assert_eq!(normalize("Région:Île").unwrap(), "région:île");
        assert_eq!(normalize("path:/a/b.c-d").unwrap(), "path:/a/b.c-d");
        assert_eq!(normalize(&"a".repeat(200)).unwrap().len(), 200);
    }

    #[test]
    fn refusals_name_the_tag() {
        let e = |t: &str| normalize(t).unwrap_err();
        assert_eq!(e(""), TagError::Empty(String::new()));
        assert_eq!(e("__"), TagError::Empty("__".into()));
        assert_eq!(e("1abc"), TagError::Start("1abc".into()));
        assert_eq!(e("_a"), TagError::Start("_a".into()));
        assert_eq!(e("team:"), TagError::EndsWithColon("team:".into()));
        assert_eq!(
            e("Service:x"),
            TagError::Reserved("Service:x".into(), "service")
        );
        assert_eq!(e("host"), TagError::Reserved("host".into(), "host"));
        assert!(matches!(e(&"a".repeat(201)), TagError::TooLong(_, 201)));
        assert!(e("1abc").to_string().contains("\"1abc\""));
        // `sourcetype:x` is not the `source` key.
        assert!(normalize("sourcetype:x").is_ok());
    }

    #[test]
    fn lists_dedupe_and_stop_at_fifty() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize_list(&l(&["A", "a", "b"])).unwrap(),
            l(&["a", "b"])
        );
        let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        assert_eq!(normalize_list(&many), Err(TagError::TooMany(51)));
        assert_eq!(normalize_list(&many[..50]).unwrap().len(), 50);
    }

    #[test]
    fn an_item_s_own_key_wins() {
        let t = Tags::new(vec!["env:prod".into(), "team:a".into(), "critical".into()]).unwrap();
        assert_eq!(t.missing_from(&["Env:staging"]), ["team:a", "critical"]);
        assert_eq!(t.missing_from(&["critical", "team:a"]), ["env:prod"]);
        assert_eq!(t.missing_from::<&str>(&[]).len(), 3);
        assert!(Tags::new(Vec::new()).is_none());
    }

    #[test]
    fn source_names() {
        assert!(check_source("acme-cloud").is_ok());
        assert!(check_source("acme_cloud.v2").is_ok());
        assert!(check_source("").unwrap_err().contains("empty"));
        assert!(check_source("Acme").unwrap_err().contains("lowercase"));
        assert!(check_source("acme cloud").unwrap_err().contains("' '"));
        assert!(check_source("1acme").is_err());
        assert!(check_source(&"a".repeat(194)).is_err());
    }
}
