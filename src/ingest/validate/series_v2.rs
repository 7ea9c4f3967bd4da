//! Metrics v2 series (`POST /api/v2/series`, docs/datadog.md "Series v2"): points are
//! `{"timestamp","value"}` objects, `type` 0..=3, and the v2 fields
//! `resources`, `unit`, `source_type_name`, `metadata`.

use serde::de::{IgnoredAny, MapAccess, SeqAccess};

use super::context::Ctx;
use super::series::Version;
use super::visit::{As, Key, Kind, Shape, want_int_in, want_object, want_str};

/// The v2 series.
#[derive(Debug, Clone, Copy)]
pub(super) struct V2;

impl Version for V2 {
    const POINTS: &'static str = r#"{"timestamp","value"} objects"#;

    fn point<'de, A: SeqAccess<'de>>(
        self,
        ctx: &mut Ctx<'_>,
        j: usize,
        seq: &mut A,
    ) -> Result<bool, A::Error> {
        Ok(seq.next_element_seed(As(PointV2 { ctx, j }))?.is_some())
    }

    fn field<'de, A: MapAccess<'de>>(
        self,
        ctx: &mut Ctx<'_>,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            // 0 unspecified, 1 count, 2 rate, 3 gauge.
            "type" => want_int_in(ctx, &map.next_value()?, "type", true, 3),
            "resources" => map.next_value_seed(As(Resources { ctx }))?,
            f @ ("unit" | "source_type_name") => {
                let v: Kind = map.next_value()?;
                want_str(ctx, &v, f, true);
            }
            "metadata" => want_object(ctx, &map.next_value()?, "metadata"),
            _ => return Ok(false),
        }
        Ok(true)
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
        // meaningless (docs/datadog.md "Series v2": "needs both in practice").
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
