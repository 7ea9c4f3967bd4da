//! Service checks (`check_run`, docs/datadog.md "Service checks"): `check`, `host_name`
//! and `status` required, `timestamp` within the window, and `"tags":[]`
//! added to a check sent without tags ([`with_empty_tags`]).

use serde::de::{IgnoredAny, MapAccess};

use super::context::Ctx;
use super::visit::{As, Key, Shape, Strings, missing, not_object, want_int, want_int_in, want_str};

pub(super) struct Check<'c, 'e> {
    pub(super) ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for Check<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let (mut check, mut host, mut status) = (false, false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "check" => {
                    check = true;
                    want_str(ctx, &map.next_value()?, "check", false);
                }
                "host_name" => {
                    host = true;
                    want_str(ctx, &map.next_value()?, "host_name", false);
                }
                // 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
                "status" => {
                    status = true;
                    want_int_in(ctx, &map.next_value()?, "status", false, 3);
                }
                "tags" => {
                    ctx.item.has_tags = true;
                    map.next_value_seed(As(Strings {
                        ctx: &mut *ctx,
                        field: "tags",
                        max_chars: 0,
                        optional: false,
                    }))?;
                }
                "message" => {
                    want_str(ctx, &map.next_value()?, "message", true);
                }
                "timestamp" => {
                    if let Some(s) = want_int(ctx, &map.next_value()?, "timestamp", true) {
                        ctx.check_time(s.saturating_mul(1000), format_args!("timestamp"));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !check {
            missing(ctx, "check");
        }
        if !host {
            missing(ctx, "host_name");
        }
        if !status {
            missing(ctx, "status");
        }
        Ok(())
    }
}

/// Appends `,"tags":[]` inside a check-run item. UNCONFIRMED whether the
/// intake requires `tags` (see the module doc). The item is a valid,
/// compact, non-empty object (`check` is required), so it ends in `}` and
/// the `,` is valid.
pub(super) fn with_empty_tags(item: &str) -> String {
    let close = item.len().saturating_sub(1);
    let mut out = String::with_capacity(item.len() + 10);
    out.push_str(item.get(..close).unwrap_or_default());
    out.push_str(r#","tags":[]}"#);
    out
}
