//! Series bodies (`{"series":[...]}`, docs/datadog.md "Series v2" and "Series v1"): metrics v2,
//! metrics v1 and distribution points. What the versions share is checked
//! here once, by [`Series`]: `metric` (its name rules), `points` (a
//! non-empty array), `interval`, `tags`; `metric` and `points` required.
//! Each version's own fields and the shape of its points are its
//! [`Version`]'s: `series_v2.rs`, `series_v1.rs` (v1 and distribution).

use serde::de::{IgnoredAny, MapAccess, SeqAccess};

use super::context::Ctx;
use super::visit::{
    As, Key, Kind, Shape, Strings, char_len_over, missing, not_object, want_int, want_str,
};

/// Datadog's longest metric name (docs/datadog.md "Series v2").
const METRIC_NAME_MAX_CHARS: usize = 200;
/// Datadog's longest tag (docs/datadog.md "Tags").
const TAG_MAX_CHARS: usize = 200;

/// What one version of a series has of its own.
pub(super) trait Version: Copy {
    /// What `points` holds, for the error when it is not an array, e.g.
    /// `[timestamp, value] pairs`.
    const POINTS: &'static str;

    /// Checks point `j`, the next element of `seq`; `false` when there is
    /// none.
    fn point<'de, A: SeqAccess<'de>>(
        self,
        ctx: &mut Ctx<'_>,
        j: usize,
        seq: &mut A,
    ) -> Result<bool, A::Error>;

    /// Checks the value of `key` when it is one of the version's own
    /// fields; `false` (the value not read) when it is not.
    fn field<'de, A: MapAccess<'de>>(
        self,
        ctx: &mut Ctx<'_>,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error>;
}

/// One series of version `V`.
pub(super) struct Series<'c, 'e, V> {
    ctx: &'c mut Ctx<'e>,
    version: V,
}

impl<'c, 'e, V> Series<'c, 'e, V> {
    pub(super) fn new(ctx: &'c mut Ctx<'e>, version: V) -> Self {
        Series { ctx, version }
    }
}

impl<'de, V: Version> Shape<'de> for Series<'_, '_, V> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (ctx, version) = (self.ctx, self.version);
        let (mut metric, mut points) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "metric" => {
                    metric = true;
                    want_metric_name(ctx, &map.next_value()?);
                }
                "points" => {
                    points = true;
                    map.next_value_seed(As(Points {
                        ctx: &mut *ctx,
                        version,
                    }))?;
                }
                "interval" => {
                    want_int(ctx, &map.next_value()?, "interval", true);
                }
                "tags" => map.next_value_seed(As(Strings {
                    ctx: &mut *ctx,
                    field: "tags",
                    max_chars: TAG_MAX_CHARS,
                    optional: true,
                }))?,
                other => {
                    if !version.field(ctx, other, &mut map)? {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
        }
        if !metric {
            missing(ctx, "metric");
        }
        if !points {
            missing(ctx, "points");
        }
        Ok(())
    }
}

/// A series' `points`: a non-empty array, each point checked by `V`.
struct Points<'c, 'e, V> {
    ctx: &'c mut Ctx<'e>,
    version: V,
}

impl<'de, V: Version> Shape<'de> for Points<'_, '_, V> {
    fn got(self, kind: &'static str) {
        self.ctx.fail(
            format_args!("points"),
            format!("must be an array of {}, got {kind}", V::POINTS),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut j = 0usize;
        while self.version.point(&mut *self.ctx, j, &mut seq)? {
            j += 1;
        }
        if j == 0 {
            self.ctx
                .fail(format_args!("points"), "must not be empty".into());
        }
        Ok(())
    }
}

/// Datadog custom metric naming (docs/datadog.md "Series v2"): starts with a letter,
/// ≤ 200 characters. Other characters are left for Datadog, which converts
/// them to underscores (see the module doc).
fn want_metric_name(ctx: &mut Ctx<'_>, v: &Kind<'_>) {
    let Some(name) = want_str(ctx, v, "metric", false) else {
        return;
    };
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let m = if name.is_empty() {
            "must not be empty".to_string()
        } else {
            format!("\"{name}\" must start with a letter")
        };
        ctx.fail(format_args!("metric"), m);
    } else if char_len_over(name, METRIC_NAME_MAX_CHARS) {
        let m = format!(
            "{} characters; Datadog accepts at most {METRIC_NAME_MAX_CHARS}",
            name.chars().count()
        );
        ctx.fail(format_args!("metric"), m);
    }
}
