//! Borrowed, non-failing visitors: the pieces every kind's check is made
//! of. [`Shape`] checks a value that should be an object or an array and
//! reports any other type; [`Kind`] sees a value only as far as its type;
//! the `want_*` functions check scalar fields; [`Strings`] checks `tags`-like
//! arrays. None of them fails on a wrong value: each reports it into the
//! [`Ctx`] and goes on.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::context::Ctx;

/// An object key, borrowed unless it holds escapes.
pub(super) struct Key<'de>(pub(super) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value seen only as far as its type (and its value for scalars).
pub(super) enum Kind<'de> {
    Null,
    Bool,
    Int(i64),
    /// An integer above `i64::MAX`.
    BigInt,
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Kind<'_> {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Int(_) | Kind::BigInt | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Kind<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Kind<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Kind<'de>, E> {
                Ok(Kind::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Kind<'de>, E> {
                Ok(Kind::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Kind<'de>, E> {
                Ok(Kind::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Kind<'de>, E> {
                Ok(i64::try_from(v).map_or(Kind::BigInt, Kind::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Kind<'de>, E> {
                Ok(Kind::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Kind<'de>, E> {
                Ok(Kind::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Kind<'de>, E> {
                Ok(Kind::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Kind<'de>, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(Kind::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Kind<'de>, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(Kind::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// A check of one JSON value that expects an object or an array. Values of
/// any other type are reported through `got` and skipped; nothing fails.
pub(super) trait Shape<'de>: Sized {
    /// The value has the wrong type (`kind` is e.g. "a string").
    fn got(self, kind: &'static str);
    fn null(self) {
        self.got("null");
    }
    fn map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.got("an object");
        IgnoredAny.visit_map(map).map(|_| ())
    }
    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.got("an array");
        IgnoredAny.visit_seq(seq).map(|_| ())
    }
}

/// Runs a [`Shape`] as a serde seed.
pub(super) struct As<S>(pub(super) S);

impl<'de, S: Shape<'de>> Visitor<'de> for As<S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.null();
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.0.got("a boolean");
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.0.got("a number");
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.0.got("a number");
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.0.got("a number");
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.0.got("a string");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.map(map)
    }
}

impl<'de, S: Shape<'de>> DeserializeSeed<'de> for As<S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

pub(super) fn char_len_over(s: &str, max: usize) -> bool {
    // Bytes ≥ chars, so the common short string needs no counting.
    s.len() > max && s.chars().count() > max
}

// --- scalar checks on `Kind` -------------------------------------------------

/// A string field; `null` counts as absent when `optional`.
pub(super) fn want_str<'a, 'de>(
    ctx: &mut Ctx<'_>,
    v: &'a Kind<'de>,
    field: &str,
    optional: bool,
) -> Option<&'a str> {
    match v {
        Kind::Str(s) => Some(s),
        Kind::Null if optional => None,
        other => {
            ctx.fail(
                format_args!("{field}"),
                format!("must be a string, got {}", other.describe()),
            );
            None
        }
    }
}

/// An integer field; `null` counts as absent when `optional`.
pub(super) fn want_int(
    ctx: &mut Ctx<'_>,
    v: &Kind<'_>,
    field: &str,
    optional: bool,
) -> Option<i64> {
    match v {
        Kind::Int(n) => Some(*n),
        Kind::Null if optional => None,
        Kind::BigInt => {
            ctx.fail(
                format_args!("{field}"),
                "must be a 64-bit integer, got a larger number".into(),
            );
            None
        }
        other => {
            ctx.fail(
                format_args!("{field}"),
                format!("must be an integer, got {}", other.describe()),
            );
            None
        }
    }
}

pub(super) fn want_int_in(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str, optional: bool, max: i64) {
    if let Some(n) = want_int(ctx, v, field, optional)
        && !(0..=max).contains(&n)
    {
        ctx.fail(
            format_args!("{field}"),
            format!("must be between 0 and {max}, got {n}"),
        );
    }
}

pub(super) fn want_object(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str) {
    if !matches!(v, Kind::Object | Kind::Null) {
        ctx.fail(
            format_args!("{field}"),
            format!("must be an object, got {}", v.describe()),
        );
    }
}

pub(super) fn want_one_of(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str, allowed: &[&str]) {
    if let Some(s) = want_str(ctx, v, field, true)
        && !allowed.contains(&s)
    {
        let m = format!("must be one of {}, got \"{s}\"", allowed.join(", "));
        ctx.fail(format_args!("{field}"), m);
    }
}

pub(super) fn want_max_chars(
    ctx: &mut Ctx<'_>,
    v: &Kind<'_>,
    field: &str,
    optional: bool,
    max: usize,
) {
    if let Some(s) = want_str(ctx, v, field, optional)
        && char_len_over(s, max)
    {
        let m = format!(
            "{} characters; Datadog accepts at most {max}",
            s.chars().count()
        );
        ctx.fail(format_args!("{field}"), m);
    }
}

pub(super) fn missing(ctx: &mut Ctx<'_>, field: &str) {
    ctx.fail(format_args!("{field}"), "is required".into());
}

// --- arrays of strings -------------------------------------------------------

/// `tags`-like: an array of strings, each at most `max_chars` (0: no limit).
pub(super) struct Strings<'c, 'e> {
    pub(super) ctx: &'c mut Ctx<'e>,
    pub(super) field: &'static str,
    pub(super) max_chars: usize,
    pub(super) optional: bool,
}

impl<'de> Shape<'de> for Strings<'_, '_> {
    fn got(self, kind: &'static str) {
        let field = self.field;
        self.ctx.fail(
            format_args!("{field}"),
            format!("must be an array of strings, got {kind}"),
        );
    }
    fn null(self) {
        if !self.optional {
            self.got("null");
        }
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let field = self.field;
        let mut j = 0usize;
        while let Some(v) = seq.next_element::<Kind<'de>>()? {
            match &v {
                Kind::Str(s) => {
                    if self.max_chars > 0 && char_len_over(s, self.max_chars) {
                        let m = format!(
                            "{} characters; Datadog accepts at most {}",
                            s.chars().count(),
                            self.max_chars
                        );
                        self.ctx.fail(format_args!("{field}[{j}]"), m);
                    }
                }
                other => self.ctx.fail(
                    format_args!("{field}[{j}]"),
                    format!("must be a string, got {}", other.describe()),
                ),
            }
            j += 1;
        }
        Ok(())
    }
}

pub(super) fn not_object(ctx: &mut Ctx<'_>, kind: &'static str) {
    ctx.fail(
        format_args!(""),
        format!("must be a JSON object, got {kind}"),
    );
}
