//! Metrics v2 series (`POST /api/v2/series`, reference §4.1).

use serde::de::{IgnoredAny, MapAccess, SeqAccess};

use super::context::Ctx;
use super::series::{TAG_MAX_CHARS, want_metric_name};
use super::visit::{
    As, Key, Kind, Shape, Strings, missing, not_object, want_int, want_int_in, want_object,
    want_str,
};

pub(super) struct SeriesV2<'c, 'e> {
    pub(super) ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for SeriesV2<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let (mut metric, mut points) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "metric" => {
                    metric = true;
                    want_metric_name(ctx, &map.next_value()?);
                }
                "points" => {
                    points = true;
                    map.next_value_seed(As(PointsV2 { ctx: &mut *ctx }))?;
                }
                // 0 unspecified, 1 count, 2 rate, 3 gauge.
                "type" => want_int_in(ctx, &map.next_value()?, "type", true, 3),
                "interval" => {
                    want_int(ctx, &map.next_value()?, "interval", true);
                }
                "resources" => map.next_value_seed(As(Resources { ctx: &mut *ctx }))?,
                "tags" => map.next_value_seed(As(Strings {
                    ctx: &mut *ctx,
                    field: "tags",
                    max_chars: TAG_MAX_CHARS,
                    optional: true,
                }))?,
                f @ ("unit" | "source_type_name") => {
                    let v: Kind = map.next_value()?;
                    want_str(ctx, &v, f, true);
                }
                "metadata" => want_object(ctx, &map.next_value()?, "metadata"),
                _ => {
                    map.next_value::<IgnoredAny>()?;
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

struct PointsV2<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for PointsV2<'_, '_> {
    fn got(self, kind: &'static str) {
        self.ctx.fail(
            format_args!("points"),
            format!("must be an array of {{\"timestamp\",\"value\"}} objects, got {kind}"),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut j = 0usize;
        while seq
            .next_element_seed(As(PointV2 {
                ctx: &mut *self.ctx,
                j,
            }))?
            .is_some()
        {
            j += 1;
        }
        if j == 0 {
            self.ctx
                .fail(format_args!("points"), "must not be empty".into());
        }
        Ok(())
    }
}

struct PointV2<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
}

impl<'de> Shape<'de> for PointV2<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("points[{j}]"),
            format!("must be a {{\"timestamp\",\"value\"}} object, got {kind}"),
        );
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (ctx, j) = (self.ctx, self.j);
        let (mut ts, mut value) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "timestamp" => {
                    ts = true;
                    match map.next_value()? {
                        Kind::Int(s) => {
                            ctx.check_time(
                                s.saturating_mul(1000),
                                format_args!("points[{j}].timestamp"),
                            );
                        }
                        other => ctx.fail(
                            format_args!("points[{j}].timestamp"),
                            format!(
                                "must be an integer (seconds since the epoch), got {}",
                                other.describe()
                            ),
                        ),
                    }
                }
                "value" => {
                    value = true;
                    match map.next_value()? {
                        Kind::Int(_) | Kind::BigInt | Kind::Float(_) => {}
                        other => ctx.fail(
                            format_args!("points[{j}].value"),
                            format!("must be a number, got {}", other.describe()),
                        ),
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // The model marks both optional, but a point without them is
        // meaningless (reference §4.1: "needed in practice").
        if !ts {
            ctx.fail(format_args!("points[{j}].timestamp"), "is required".into());
        }
        if !value {
            ctx.fail(format_args!("points[{j}].value"), "is required".into());
        }
        Ok(())
    }
}

struct Resources<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for Resources<'_, '_> {
    fn got(self, kind: &'static str) {
        self.ctx.fail(
            format_args!("resources"),
            format!("must be an array of {{\"name\",\"type\"}} objects, got {kind}"),
        );
    }
    fn null(self) {}
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut j = 0usize;
        while seq
            .next_element_seed(As(Resource {
                ctx: &mut *self.ctx,
                j,
            }))?
            .is_some()
        {
            j += 1;
        }
        Ok(())
    }
}

struct Resource<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
}

impl<'de> Shape<'de> for Resource<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("resources[{j}]"),
            format!("must be a {{\"name\",\"type\"}} object, got {kind}"),
        );
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (ctx, j) = (self.ctx, self.j);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                f @ ("name" | "type") => {
                    let v: Kind = map.next_value()?;
                    if !matches!(v, Kind::Str(_) | Kind::Null) {
                        ctx.fail(
                            format_args!("resources[{j}].{f}"),
                            format!("must be a string, got {}", v.describe()),
                        );
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}
