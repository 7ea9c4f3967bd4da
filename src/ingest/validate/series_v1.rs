//! Metrics v1 series (`POST /api/v1/series`, docs/datadog.md "Series v1") and
//! distribution points (docs/datadog.md "Distribution points"): points are
//! `[timestamp, value]` pairs, or `[timestamp, [values...]]` for a
//! distribution; `type` one of v1's names, or `distribution`; `host`.

use serde::de::{IgnoredAny, MapAccess, SeqAccess};

use super::context::Ctx;
use super::series::Version;
use super::visit::{As, Kind, Shape, want_one_of, want_str};

/// A v1 series, or a distribution series when `values` (its points carry
/// a list of values each, and its `type` is `distribution`).
#[derive(Debug, Clone, Copy)]
pub(super) struct V1 {
    pub(super) values: bool,
}

impl Version for V1 {
    const POINTS: &'static str = "[timestamp, value] pairs";

    fn point<'de, A: SeqAccess<'de>>(
        self,
        ctx: &mut Ctx<'_>,
        j: usize,
        seq: &mut A,
    ) -> Result<bool, A::Error> {
        let point = PointV1 {
            ctx,
            j,
            values: self.values,
        };
        Ok(seq.next_element_seed(As(point))?.is_some())
    }

    fn field<'de, A: MapAccess<'de>>(
        self,
        ctx: &mut Ctx<'_>,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        let types: &[&str] = if self.values {
            &["distribution"]
        } else {
            &["", "count", "gauge", "rate"]
        };
        match key {
            "type" => want_one_of(ctx, &map.next_value()?, "type", types),
            "host" => {
                want_str(ctx, &map.next_value()?, "host", true);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

struct PointV1<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
    /// A distribution point: `[timestamp, [values...]]`.
    values: bool,
}

impl<'de> Shape<'de> for PointV1<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("points[{j}]"),
            format!("must be a [timestamp, value] pair, got {kind}"),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (ctx, j) = (self.ctx, self.j);
        let mut n = 0usize;
        if self.values {
            return distribution_point(ctx, j, seq);
        }
        while let Some(v) = seq.next_element::<Kind<'de>>()? {
            match (n, &v) {
                // v1 points are doubles in the model: a float timestamp is fine.
                (0, _) => point_time(ctx, j, &v),
                // UNCONFIRMED whether the intake takes a null value: refuse it.
                (1, Kind::Int(_) | Kind::BigInt | Kind::Float(_)) => {}
                (1, other) => ctx.fail(
                    format_args!("points[{j}][1]"),
                    format!("value must be a number, got {}", other.describe()),
                ),
                _ => {}
            }
            n += 1;
        }
        if n != 2 {
            ctx.fail(
                format_args!("points[{j}]"),
                format!("must be a [timestamp, value] pair, got {n} elements"),
            );
        }
        Ok(())
    }
}

/// `[timestamp, [values...]]`: the v1 point whose value is a list.
fn distribution_point<'de, A: SeqAccess<'de>>(
    ctx: &mut Ctx<'_>,
    j: usize,
    mut seq: A,
) -> Result<(), A::Error> {
    let mut n = 0usize;
    loop {
        let more = match n {
            0 => seq
                .next_element::<Kind<'de>>()?
                .map(|v| point_time(ctx, j, &v)),
            1 => seq.next_element_seed(As(Values { ctx: &mut *ctx, j }))?,
            _ => seq.next_element::<IgnoredAny>()?.map(|_| ()),
        };
        if more.is_none() {
            break;
        }
        n += 1;
    }
    if n != 2 {
        ctx.fail(
            format_args!("points[{j}]"),
            format!("must be a [timestamp, [values...]] pair, got {n} elements"),
        );
    }
    Ok(())
}

/// A v1 point's timestamp: seconds, an integer or a float.
fn point_time(ctx: &mut Ctx<'_>, j: usize, v: &Kind<'_>) {
    match v {
        Kind::Int(s) => ctx.check_time(s.saturating_mul(1000), format_args!("points[{j}][0]")),
        // `as` saturates; a NaN cannot come from JSON.
        Kind::Float(s) => ctx.check_time((s * 1000.0) as i64, format_args!("points[{j}][0]")),
        other => ctx.fail(
            format_args!("points[{j}][0]"),
            format!(
                "timestamp must be a number (seconds since the epoch), got {}",
                other.describe()
            ),
        ),
    }
}

/// A distribution point's values: an array of numbers.
struct Values<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
}

impl<'de> Shape<'de> for Values<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("points[{j}][1]"),
            format!("values must be an array of numbers, got {kind}"),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let j = self.j;
        let mut k = 0usize;
        while let Some(v) = seq.next_element::<Kind<'de>>()? {
            if !matches!(v, Kind::Int(_) | Kind::BigInt | Kind::Float(_)) {
                self.ctx.fail(
                    format_args!("points[{j}][1][{k}]"),
                    format!("must be a number, got {}", v.describe()),
                );
            }
            k += 1;
        }
        Ok(())
    }
}
