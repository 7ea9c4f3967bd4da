//! Age-out: Datadog drops items older than its acceptance window
//! (`Endpoint::window`: series 1 h, check_run 10 min, logs, events and traces
//! 18 h), so an item held in the queue past it is not sent but counted.
//! Ingest trims the points of a series to the window with the same function
//! ([`trim_to`]), as Datadog drops them.
//!
//! Records carry their oldest and newest item timestamps, so this per-item
//! parse runs only for records that straddle the cutoff (rare).

use serde_json::Value;

use crate::site::Endpoint;

/// What to do with one item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Trimmed {
    /// Fresh enough: send as is.
    Keep,
    /// Entirely past the window.
    Drop,
    /// Some of its points were past the window: send this instead.
    Rewritten(Vec<u8>),
}

/// Trims `item` (compact JSON) to what is newer than `cutoff_ms`.
pub(crate) fn trim(endpoint: Endpoint, item: &[u8], cutoff_ms: i64) -> Trimmed {
    trim_to(endpoint, item, cutoff_ms, i64::MAX)
}

/// Trims `item` (compact JSON) to what lies within `lo_ms..=hi_ms`: a
/// series keeps the points inside, an item of another kind is kept or
/// dropped whole by its timestamp. Items without a timestamp are kept.
pub(crate) fn trim_to(endpoint: Endpoint, item: &[u8], lo_ms: i64, hi_ms: i64) -> Trimmed {
    // Binary items (traces, stats) age as whole records: the planner drops
    // a record once all of it is past the window, never part of one.
    if endpoint.binary() {
        return Trimmed::Keep;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(item) else {
        return Trimmed::Keep;
    };
    let inside = |ms: Option<i64>| ms.is_none_or(|t| (lo_ms..=hi_ms).contains(&t));
    let whole = |ms: Option<i64>| {
        if inside(ms) {
            Trimmed::Keep
        } else {
            Trimmed::Drop
        }
    };
    let seconds = |v: Option<&Value>| v.and_then(Value::as_i64).map(|s| s.saturating_mul(1000));
    match endpoint {
        Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => {
            let Some(points) = v.get_mut("points").and_then(Value::as_array_mut) else {
                return Trimmed::Keep;
            };
            let before = points.len();
            points.retain(|p| inside(point_ms(endpoint, p)));
            match points.len() {
                0 => Trimmed::Drop,
                n if n == before => Trimmed::Keep,
                _ => serde_json::to_vec(&v)
                    .map(Trimmed::Rewritten)
                    .unwrap_or(Trimmed::Keep),
            }
        }
        Endpoint::Logs => whole(v.get("timestamp").and_then(Value::as_i64)),
        Endpoint::Events => whole(seconds(v.get("date_happened"))),
        Endpoint::CheckRun => whole(seconds(v.get("timestamp"))),
        Endpoint::EventsV2 => whole(rfc3339_ms(v.pointer("/data/attributes/timestamp"))),
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => Trimmed::Keep,
    }
}

/// A series point's time in ms: v2 `{"timestamp": s}`, v1 and
/// distribution `[s, ...]` (a float in the v1 model).
fn point_ms(endpoint: Endpoint, p: &Value) -> Option<i64> {
    match endpoint {
        Endpoint::SeriesV2 => p
            .get("timestamp")
            .and_then(Value::as_i64)
            .map(|s| s.saturating_mul(1000)),
        // `as` saturates; a NaN cannot come from JSON.
        _ => p
            .get(0)
            .and_then(Value::as_f64)
            .map(|f| (f * 1000.0) as i64),
    }
}

/// A v2 event's RFC 3339 `timestamp` in ms (other strings are not read).
fn rfc3339_ms(v: Option<&Value>) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(v?.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_points_are_trimmed() {
        let item =
            br#"{"metric":"a","points":[{"timestamp":100,"value":1},{"timestamp":200,"value":2}]}"#;
        assert_eq!(trim(Endpoint::SeriesV2, item, 50_000), Trimmed::Keep);
        assert_eq!(trim(Endpoint::SeriesV2, item, 300_000), Trimmed::Drop);
        match trim(Endpoint::SeriesV2, item, 150_000) {
            Trimmed::Rewritten(b) => {
                let v: Value = serde_json::from_slice(&b).unwrap();
                assert_eq!(v["points"].as_array().unwrap().len(), 1);
                assert_eq!(v["points"][0]["timestamp"], 200);
            }
            other => panic!("{other:?}"),
        }
        let v1 = br#"{"metric":"a","points":[[100,1.0]]}"#;
        assert_eq!(trim(Endpoint::SeriesV1, v1, 200_000), Trimmed::Drop);
    }

    #[test]
    fn timestamps_of_other_kinds() {
        assert_eq!(
            trim(Endpoint::Logs, br#"{"message":"m","timestamp":1000}"#, 2000),
            Trimmed::Drop
        );
        assert_eq!(
            trim(Endpoint::Logs, br#"{"message":"m"}"#, 2000),
            Trimmed::Keep
        );
        assert_eq!(
            trim(Endpoint::CheckRun, br#"{"check":"c","timestamp":1}"#, 2000),
            Trimmed::Drop
        );
        assert_eq!(
            trim(
                Endpoint::Events,
                br#"{"title":"t","date_happened":5}"#,
                2000
            ),
            Trimmed::Keep
        );
    }
}
