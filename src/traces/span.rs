//! A span as the relay's trace path holds it between the request's body
//! and the queue item: its strings borrowed from the decompressed body
//! where they came valid, owned only where the span rules or the tenant's
//! tags rewrote them, and its tags in one small vector per map. It is
//! encoded as the intake's `pb::Span` (the same fields, numbers and
//! types), as prost encodes that message (byte for byte when the tags are
//! in key order), so fakedog and any protobuf reader read it as one.
//!
//! Why not the prost struct: it owns every string and keeps tags in a
//! tree, so a span of ten tags cost some thirty allocations and as many
//! frees, most of a request's CPU (BENCHMARKS.md "Change 17: spans that
//! borrow the request's body (2026-12-07)").

use std::borrow::Cow;

use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::pb;

/// A span's string: borrowed from the request, or owned once rewritten.
pub(crate) type Text<'a> = Cow<'a, str>;

/// A map of a span's tags, keys unique (a later insert of a key replaces
/// the value, as a map's does). While small, entries stay in the order
/// they came and a key is found by a scan that compares lengths first: a
/// span's dozen tags are found that way in a few nanoseconds, where a
/// binary search called `memcmp` at every step (a tenth of the relay's
/// CPU under trace load). Past [`SCAN_MAX`] entries they are sorted and
/// binary-searched, so a span of many tags costs O(n log n), not O(n²).
/// The protobuf encoding writes entries in the map's order: the same
/// spans encode the same way.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanMap<'a, V> {
    /// Sorted by key whenever there are more than [`SCAN_MAX`].
    entries: Vec<(Text<'a>, V)>,
}

/// Entries found by a scan; more are sorted.
const SCAN_MAX: usize = 32;

impl<V> Default for SpanMap<'_, V> {
    fn default() -> Self {
        SpanMap {
            entries: Vec::new(),
        }
    }
}

impl<'a, V> SpanMap<'a, V> {
    /// The key's index, or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        if self.entries.len() > SCAN_MAX {
            return self.entries.binary_search_by(|(k, _)| k.as_ref().cmp(key));
        }
        self.entries
            .iter()
            .position(|(k, _)| k.len() == key.len() && k.as_bytes() == key.as_bytes())
            .ok_or(self.entries.len())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; an existing key keeps its place.
    pub(crate) fn insert(&mut self, key: impl Into<Text<'a>>, value: V) {
        let key = key.into();
        match self.find(&key) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => {
                self.entries.insert(i, (key, value));
                // Past the scan's size for the first time: sorted from now
                // on (a larger map inserts at its sorted place, a removal
                // keeps the order).
                if self.entries.len() == SCAN_MAX + 1 {
                    self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                }
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    /// The entries, in the map's order, to rebuild the map from.
    pub(crate) fn take(&mut self) -> Vec<(Text<'a>, V)> {
        std::mem::take(&mut self.entries)
    }

    /// Reserves room for `n` more entries (a map's length from the body).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }
}

#[cfg(test)]
impl<V> std::ops::Index<&str> for SpanMap<'_, V> {
    type Output = V;

    fn index(&self, key: &str) -> &V {
        self.get(key).expect("the key is in the map")
    }
}

impl<'a, V, K: Into<Text<'a>>> FromIterator<(K, V)> for SpanMap<'a, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = SpanMap::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// One span (see the module's doc); fields as `pb::Span`'s.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Span<'a> {
    pub(crate) service: Text<'a>,
    pub(crate) name: Text<'a>,
    pub(crate) resource: Text<'a>,
    pub(crate) trace_id: u64,
    pub(crate) span_id: u64,
    pub(crate) parent_id: u64,
    /// Nanoseconds since the Unix epoch.
    pub(crate) start: i64,
    /// Nanoseconds.
    pub(crate) duration: i64,
    pub(crate) error: i32,
    pub(crate) meta: SpanMap<'a, Text<'a>>,
    pub(crate) metrics: SpanMap<'a, f64>,
    pub(crate) r#type: Text<'a>,
    pub(crate) meta_struct: SpanMap<'a, Cow<'a, [u8]>>,
    /// Rare: kept as the schema's message.
    pub(crate) span_links: Vec<pb::SpanLink>,
}

/// What a framed trace chunk needs of a span: its protobuf encoding
/// (`crate::traces::ChunkHead`). The relay's spans and the schema's.
pub(crate) trait EncodeSpan {
    fn encoded_len(&self) -> usize;
    fn encode_raw(&self, out: &mut Vec<u8>);
}

impl EncodeSpan for pb::Span {
    fn encoded_len(&self) -> usize {
        prost::Message::encoded_len(self)
    }

    fn encode_raw(&self, out: &mut Vec<u8>) {
        prost::Message::encode_raw(self, out)
    }
}

impl EncodeSpan for Span<'_> {
    fn encoded_len(&self) -> usize {
        let ints = [
            (4, self.trace_id),
            (5, self.span_id),
            (6, self.parent_id),
            (7, self.start as u64),
            (8, self.duration as u64),
            // int32 is sign-extended to 64 bits on the wire.
            (9, i64::from(self.error) as u64),
        ];
        str_len(1, &self.service)
            + str_len(2, &self.name)
            + str_len(3, &self.resource)
            + ints.iter().map(|(t, v)| varint_len(*t, *v)).sum::<usize>()
            + map_len(10, &self.meta)
            + map_len(11, &self.metrics)
            + str_len(12, &self.r#type)
            + map_len(13, &self.meta_struct)
            + self
                .span_links
                .iter()
                .map(|l| message_len(14, l.encoded_len()))
                .sum::<usize>()
    }

    /// Fields in number order, defaults left out, as prost writes them.
    fn encode_raw(&self, out: &mut Vec<u8>) {
        put_str(out, 1, &self.service);
        put_str(out, 2, &self.name);
        put_str(out, 3, &self.resource);
        put_varint(out, 4, self.trace_id);
        put_varint(out, 5, self.span_id);
        put_varint(out, 6, self.parent_id);
        put_varint(out, 7, self.start as u64);
        put_varint(out, 8, self.duration as u64);
        put_varint(out, 9, i64::from(self.error) as u64);
        put_map(out, 10, &self.meta);
        put_map(out, 11, &self.metrics);
        put_str(out, 12, &self.r#type);
        put_map(out, 13, &self.meta_struct);
        for link in &self.span_links {
            prost::encoding::message::encode(14, link, out);
        }
    }
}

impl Span<'_> {
    /// The schema's message of the same span.
    pub(crate) fn to_pb(&self) -> pb::Span {
        let owned = |m: &SpanMap<'_, Text<'_>>| {
            m.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        pb::Span {
            service: self.service.to_string(),
            name: self.name.to_string(),
            resource: self.resource.to_string(),
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            start: self.start,
            duration: self.duration,
            error: self.error,
            meta: owned(&self.meta),
            metrics: self
                .metrics
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            r#type: self.r#type.to_string(),
            meta_struct: self
                .meta_struct
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            span_links: self.span_links.clone(),
        }
    }
}

fn varint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_varint(out: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

/// A length-delimited field of `len` bytes, with its tag and length.
fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn bytes_len(tag: u32, v: &[u8]) -> usize {
    if v.is_empty() {
        0
    } else {
        message_len(tag, v.len())
    }
}

fn str_len(tag: u32, v: &str) -> usize {
    bytes_len(tag, v.as_bytes())
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, v: &[u8]) {
    if !v.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(v.len() as u64, out);
        out.extend_from_slice(v);
    }
}

fn put_str(out: &mut Vec<u8>, tag: u32, v: &str) {
    put_bytes(out, tag, v.as_bytes());
}

/// A double; 0 (and -0, equal to it) is the default, left out as prost
/// leaves it out.
fn double_len(tag: u32, v: f64) -> usize {
    if v == 0.0 { 0 } else { key_len(tag) + 8 }
}

fn put_double(out: &mut Vec<u8>, tag: u32, v: f64) {
    if v != 0.0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A map's value: field 2 of its entry, left out when it is the default.
trait MapValue {
    fn field_len(&self) -> usize;
    fn put_field(&self, out: &mut Vec<u8>);
}

impl MapValue for Text<'_> {
    fn field_len(&self) -> usize {
        str_len(2, self)
    }

    fn put_field(&self, out: &mut Vec<u8>) {
        put_str(out, 2, self);
    }
}

impl MapValue for f64 {
    fn field_len(&self) -> usize {
        double_len(2, *self)
    }

    fn put_field(&self, out: &mut Vec<u8>) {
        put_double(out, 2, *self);
    }
}

impl MapValue for Cow<'_, [u8]> {
    fn field_len(&self) -> usize {
        bytes_len(2, self)
    }

    fn put_field(&self, out: &mut Vec<u8>) {
        put_bytes(out, 2, self);
    }
}

/// A map field: one length-delimited entry per key, the key as field 1
/// and the value as field 2, each left out when it is the default.
fn entry_len(k: &str, v: &impl MapValue) -> usize {
    str_len(1, k) + v.field_len()
}

fn map_len<V: MapValue>(tag: u32, m: &SpanMap<'_, V>) -> usize {
    m.iter()
        .map(|(k, v)| message_len(tag, entry_len(k, v)))
        .sum()
}

fn put_map<V: MapValue>(out: &mut Vec<u8>, tag: u32, m: &SpanMap<'_, V>) {
    for (k, v) in m.iter() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(entry_len(k, v) as u64, out);
        put_str(out, 1, k);
        v.put_field(out);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn full() -> Span<'static> {
        Span {
            service: "web".into(),
            name: "http.request".into(),
            resource: "GET /".into(),
            trace_id: u64::MAX,
            span_id: 7,
            parent_id: 0,
            start: 1_750_000_000_000_000_000,
            duration: 1,
            error: -3,
            meta: [("b", "2"), ("a", "1"), ("", "no key"), ("empty", "")]
                .into_iter()
                .map(|(k, v)| (k, Cow::Borrowed(v)))
                .collect(),
            metrics: [
                ("m", 1.5),
                ("zero", 0.0),
                ("neg", -0.0),
                ("inf", f64::INFINITY),
            ]
            .into_iter()
            .collect(),
            r#type: "web".into(),
            meta_struct: [
                ("s", Cow::Borrowed(&[1u8, 2][..])),
                ("e", Cow::Borrowed(&[][..])),
            ]
            .into_iter()
            .collect(),
            span_links: vec![pb::SpanLink {
                trace_id: 1,
                span_id: 2,
                tracestate: "t".into(),
                ..Default::default()
            }],
        }
    }

    /// The same entries, inserted in key order.
    fn in_key_order<'a, V: Clone>(m: &SpanMap<'a, V>) -> SpanMap<'a, V> {
        let mut entries = m.entries.clone();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.into_iter().collect()
    }

    /// The hand encoding reads back as the schema's message, and is as
    /// long as prost's, for spans with and without each field, default
    /// keys and values included; in key order it is prost's byte for byte.
    #[test]
    fn a_span_encodes_as_prost_encodes_the_schemas_message() {
        let spans = [
            full(),
            Span::default(),
            Span {
                error: 1,
                ..Span::default()
            },
        ];
        for span in spans {
            let ours = {
                let mut out = Vec::new();
                span.encode_raw(&mut out);
                out
            };
            let theirs = span.to_pb().encode_to_vec();
            assert_eq!(EncodeSpan::encoded_len(&span), theirs.len());
            assert_eq!(ours.len(), theirs.len());
            let back = pb::Span::decode(ours.as_slice()).unwrap();
            assert_eq!(back, span.to_pb());
            // Tags inserted in key order encode as prost's tree map does.
            let mut sorted = span.clone();
            sorted.meta = in_key_order(&span.meta);
            sorted.metrics = in_key_order(&span.metrics);
            sorted.meta_struct = in_key_order(&span.meta_struct);
            let mut in_order = Vec::new();
            sorted.encode_raw(&mut in_order);
            assert_eq!(in_order, theirs, "{span:?}");
        }
    }

    #[test]
    fn a_later_insert_replaces_and_keys_stay_unique_small_or_large() {
        let mut m: SpanMap<'_, i32> = SpanMap::default();
        for (k, v) in [("c", 1), ("a", 2), ("b", 3), ("a", 4)] {
            m.insert(k, v);
        }
        assert_eq!(m.keys().collect::<Vec<_>>(), ["c", "a", "b"]);
        assert_eq!(m.get("a"), Some(&4));
        assert_eq!(m.remove("b"), Some(3));
        assert!(!m.contains_key("b") && m.keys().count() == 2);
        assert_eq!(m.remove("zz"), None);
        // Past the scan's size: sorted, every key found, none twice.
        for round in 0..2 {
            for i in (0..100).rev() {
                m.insert(format!("k{i}"), i + round);
            }
        }
        assert_eq!(m.keys().count(), 102);
        assert!((0..100).all(|i| m.get(&format!("k{i}")) == Some(&(i + 1))));
        assert_eq!(m.get("a"), Some(&4));
        assert!(m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b));
        assert_eq!(m.remove("k5"), Some(6));
        assert!(!m.contains_key("k5"));
        // Back to the scan's size by removals, then past it again.
        for i in 6..75 {
            m.remove(&format!("k{i}"));
        }
        assert_eq!(m.keys().count(), 32);
        m.insert("zz", 1);
        m.insert("k5", 2);
        assert!(m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b));
        assert!(m.contains_key("zz") && m.get("k5") == Some(&2) && m.get("k99") == Some(&100));
    }
}
