//! Series bodies (`{"series":[...]}`, reference §4.1, §4.2): what metrics
//! v2, metrics v1 and distribution points share (`series_v2.rs`,
//! `series_v1.rs`).

use super::context::Ctx;
use super::visit::{Kind, char_len_over, want_str};

/// Datadog's longest metric name (custom metrics docs, reference §4.1).
pub(super) const METRIC_NAME_MAX_CHARS: usize = 200;
/// Datadog's longest tag (tagging docs, reference §4.1).
pub(super) const TAG_MAX_CHARS: usize = 200;

/// Datadog custom metric naming (reference §4.1): starts with a letter,
/// ≤ 200 characters. Other characters are left for Datadog, which converts
/// them to underscores (see the module doc).
pub(super) fn want_metric_name(ctx: &mut Ctx<'_>, v: &Kind<'_>) {
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
