//! Events v1 (docs/datadog.md "Events v1"): `title` and `text` required, the lengths
//! and enumerations Datadog documents, `date_happened` within the window.

use serde::de::{IgnoredAny, MapAccess};

use super::context::Ctx;
use super::visit::{
    As, Key, Kind, Shape, Strings, missing, not_object, want_int, want_max_chars, want_one_of,
    want_str,
};

/// Events v1 `text` maxLength (docs/datadog.md "Events v1").
const EVENT_TEXT_MAX_CHARS: usize = 4000;
/// Events v1 `aggregation_key` maxLength (docs/datadog.md "Events v1").
const EVENT_AGGREGATION_KEY_MAX_CHARS: usize = 100;

pub(super) struct Event<'c, 'e> {
    pub(super) ctx: &'c mut Ctx<'e>,
}

/// Events v1 `alert_type` values (docs/datadog.md "Events v1").
const ALERT_TYPES: [&str; 7] = [
    "error",
    "warning",
    "info",
    "success",
    "user_update",
    "recommendation",
    "snapshot",
];

impl<'de> Shape<'de> for Event<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let (mut title, mut text) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "title" => {
                    title = true;
                    want_str(ctx, &map.next_value()?, "title", false);
                }
                "text" => {
                    text = true;
                    want_max_chars(ctx, &map.next_value()?, "text", false, EVENT_TEXT_MAX_CHARS);
                }
                "date_happened" => {
                    if let Some(s) = want_int(ctx, &map.next_value()?, "date_happened", true) {
                        ctx.check_time(s.saturating_mul(1000), format_args!("date_happened"));
                    }
                }
                "priority" => want_one_of(ctx, &map.next_value()?, "priority", &["normal", "low"]),
                "alert_type" => want_one_of(ctx, &map.next_value()?, "alert_type", &ALERT_TYPES),
                "aggregation_key" => want_max_chars(
                    ctx,
                    &map.next_value()?,
                    "aggregation_key",
                    true,
                    EVENT_AGGREGATION_KEY_MAX_CHARS,
                ),
                "tags" => map.next_value_seed(As(Strings {
                    ctx: &mut *ctx,
                    field: "tags",
                    max_chars: 0,
                    optional: true,
                }))?,
                f @ ("host" | "source_type_name" | "device_name") => {
                    let v: Kind = map.next_value()?;
                    want_str(ctx, &v, f, true);
                }
                "related_event_id" => {
                    want_int(ctx, &map.next_value()?, "related_event_id", true);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !title {
            missing(ctx, "title");
        }
        if !text {
            missing(ctx, "text");
        }
        Ok(())
    }
}
