//! The properties the fuzz targets in `fuzz/` check, one function per
//! target. Not part of the API (hidden from the docs): the targets are
//! one-liners that call these, and the unit tests below replay every file
//! of the checked-in corpus (`fuzz/corpus/<target>/`) and every crash found
//! so far (`fuzz/regressions/<target>/`) through them, so `cargo test`
//! keeps the corpus meaningful and every past finding fixed.
//!
//! Each function takes arbitrary bytes and panics only when a property is
//! broken:
//! - [`ingest`]: the body decoders and validators. Byte 0 picks the data
//!   kind (low nibble) and the content encoding (high nibble); the rest is
//!   the request body. Decompression stays within its limit; a body that
//!   validates becomes one compact JSON object per item (no raw newline,
//!   no whitespace outside strings), as many as the count says, and the
//!   payload, sent again as a request, validates to exactly itself; it never
//!   looks like a ready record, and packed into one it rebuilds to its
//!   items; the body read as a ready record is refused or rebuilt cleanly.
//! - [`callback_query`]: the OAuth callback's query string, parsed with
//!   axum's `Query` (as the public listener does), then the pure checks of
//!   `crate::oauth`. A `domain` is accepted only when it *is* the domain
//!   of one of [`site::SITES`] (and of the allowed ones); a `site` value only
//!   as a host that is a known site's web host or one DNS label under a
//!   known site domain; every failure page escapes what it shows.
//! - [`queue_segment`]: arbitrary bytes as a queue segment file (optionally
//!   with an ack file). Opening never fails and never panics; every record
//!   the queue hands out exists in the file with matching checksums (checked
//!   by an independent parser here, not the queue's own); recovery is
//!   idempotent.
//!
//! - [`traces`]: the trace API's bodies. Byte 0 picks the format (0
//!   `/v0.3` JSON, 1 `/v0.4`, 2 `/v0.5`, 3 `/v0.6/stats`); the rest is the
//!   body. Decoding never panics; spans that pass Datadog's span rules have
//!   ids, one trace id per trace, a start after 2000, no negative duration
//!   and service and name within 100 bytes; a trace framed by hand decodes
//!   as the protobuf of the same spans; the framed traces stored as a
//!   gzip piece give their items back, and sent decode as exactly the
//!   items and the payload's closing; the stats computed for them, and a
//!   client stats body, read back as they were written.
//!
//! [`write_corpus`] writes the seed corpus (run by the `write_fuzz_corpus`
//! test with `DDRELAYTEST_WRITE_FUZZ_CORPUS=1`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::de::IgnoredAny;

use crate::codec::{self, CodecError};
use crate::ingest::validate::{Invalid, MAX_ERRORS, validate};
use crate::oauth::{self, CallbackQuery, MAX_PARAM};
use crate::pipeline::record::{self, Ready};
use crate::queue::{self, Limits, Queue};
use crate::site::{self, AllowedSites, Encoding, Endpoint, HostRole, SITES, Site, WebSite};

/// The clock of [`ingest`]: fixed, so seeds with timestamps stay valid.
pub(crate) const NOW_MS: i64 = 1_700_000_000_000;

/// Decompressed-size limit used by [`ingest`]: small, so bombs are cheap.
pub(crate) const DECOMPRESS_LIMIT: usize = 256 * 1024;

/// Encodings in the order of the selector's high nibble.
pub(crate) const ENCODINGS: [Encoding; 4] = [
    Encoding::Identity,
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Zstd,
];

/// The selector byte [`ingest`] reads for `endpoint` and `encoding`.
pub(crate) fn selector(endpoint: Endpoint, encoding: Encoding) -> u8 {
    let e = Endpoint::ALL
        .iter()
        .position(|x| *x == endpoint)
        .unwrap_or(0) as u8;
    let c = ENCODINGS.iter().position(|x| *x == encoding).unwrap_or(0) as u8;
    (c << 4) | e
}

// ---------------------------------------------------------------------------
// ingest

/// Fuzz target `ingest`: decode then validate, and check the result.
pub fn ingest(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let endpoint = Endpoint::ALL[usize::from(sel & 0x0f) % Endpoint::ALL.len()];
    let encoding = ENCODINGS[usize::from(sel >> 4) % ENCODINGS.len()];
    let decoded = match codec::decompress(encoding, body, DECOMPRESS_LIMIT) {
        Ok(d) => d,
        Err(CodecError::TooLarge { limit }) => {
            assert_eq!(limit, DECOMPRESS_LIMIT);
            return;
        }
        Err(CodecError::Corrupt { message, .. }) => {
            assert!(encoding != Encoding::Identity, "identity is never corrupt");
            let _ = message;
            return;
        }
        Err(CodecError::Budget(why)) => panic!("no budget was given: {why}"),
    };
    assert!(decoded.len() <= DECOMPRESS_LIMIT, "decompression limit");
    if encoding == Encoding::Identity {
        assert_eq!(decoded, body, "identity must copy");
    }
    check_validate(endpoint, &decoded);
    // The same bytes read as a stored ready record: refused or rebuilt,
    // never a panic, never more items than the header states.
    if let Ok(ready) = Ready::parse(&bytes::Bytes::copy_from_slice(&decoded))
        && let Ok(items) = ready.items(endpoint)
    {
        assert_eq!(items.len(), ready.item_count());
    }
    // Whatever decoded must survive our own compression for every encoding.
    if decoded.len() <= 16 * 1024 {
        for e in ENCODINGS {
            let c = codec::compress(e, 1, &decoded);
            assert_eq!(
                codec::decompress(e, &c, DECOMPRESS_LIMIT).as_deref(),
                Ok(decoded.as_slice()),
                "{e:?} round trip"
            );
        }
    }
}

/// Validates `body` and checks every promise of [`Validated`](crate::ingest::validate::Validated).
pub(crate) fn check_validate(endpoint: Endpoint, body: &[u8]) {
    let v = match validate(endpoint, body, NOW_MS) {
        Ok(v) => v,
        Err(e) => {
            let messages = e.messages();
            assert!(!messages.is_empty() && messages.iter().all(|m| !m.is_empty()));
            if let Invalid::Items { errors, more } = &e {
                assert!(!errors.is_empty() && errors.len() <= MAX_ERRORS);
                assert!(*more == 0 || errors.len() == MAX_ERRORS);
            }
            return;
        }
    };
    let items: Vec<&[u8]> = if v.payload.is_empty() {
        Vec::new()
    } else {
        v.payload.split(|b| *b == b'\n').collect()
    };
    assert_eq!(items.len(), v.items as usize, "item count");
    assert!(v.oldest_ms <= v.newest_ms, "oldest after newest");
    match endpoint {
        // One event per request; none when it was dropped as stale.
        Endpoint::Events | Endpoint::EventsV2 => assert!(items.len() <= 1, "one event per request"),
        Endpoint::Logs => assert!(items.len() <= 1000, "logs per request"),
        _ => {}
    }
    for item in &items {
        assert!(
            item.first() == Some(&b'{') && item.last() == Some(&b'}'),
            "item is not an object: {:?}",
            String::from_utf8_lossy(item)
        );
        assert!(
            is_compact(item),
            "item is not compact: {:?}",
            String::from_utf8_lossy(item)
        );
        assert!(
            serde_json::from_slice::<IgnoredAny>(item).is_ok(),
            "item is not JSON: {:?}",
            String::from_utf8_lossy(item)
        );
        assert!(item.len() <= endpoint.limits().max_item + 10);
    }
    // Never mistaken for a ready record; packed into one (where it fills a
    // payload), it gives back exactly its items.
    assert!(!record::is_ready(&v.payload), "payload looks ready");
    if let Some(ready) = record::pack_ready(endpoint, Encoding::Gzip, 1, &v.payload) {
        let back = Ready::parse(&bytes::Bytes::from(ready)).and_then(|r| r.items(endpoint));
        let back = match back {
            Ok(b) => b,
            Err(e) => panic!("our own ready record does not rebuild: {e}"),
        };
        let back: Vec<&[u8]> = back.iter().map(|b| b.as_ref()).collect();
        assert_eq!(back, items, "ready record changed the items");
    }
    assert!(
        v.dropped != Default::default() || v.notes.is_empty(),
        "notes without anything dropped"
    );
    // An event dropped as stale leaves nothing to send again: the events
    // API takes one object per request, and an empty body is not one.
    if items.is_empty() && matches!(endpoint, Endpoint::Events | Endpoint::EventsV2) {
        assert!(
            v.dropped.stale > 0,
            "an event vanished without being dropped"
        );
        return;
    }
    // Sent again, the payload is accepted as exactly itself (what was
    // dropped or cut the first time is not there to drop again).
    let again = rebuild(endpoint, &items);
    match validate(endpoint, &again, NOW_MS) {
        Ok(w) => assert_eq!(
            (&w.payload, w.items, w.oldest_ms, w.newest_ms),
            (&v.payload, v.items, v.oldest_ms, v.newest_ms),
            "re-validation changed the payload"
        ),
        Err(e) => panic!(
            "a validated payload does not validate again: {e}: {:?}",
            String::from_utf8_lossy(&again)
        ),
    }
}

/// No byte of JSON whitespace (nor any control byte) outside strings, and
/// no raw control byte inside them.
fn is_compact(item: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &b in item {
        if b < 0x20 {
            return false;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b' ' {
            return false;
        }
    }
    !in_string
}

/// A request body holding `items`, as a client would send them.
fn rebuild(endpoint: Endpoint, items: &[&[u8]]) -> Vec<u8> {
    let joined = items.join(&b","[..]);
    match endpoint {
        Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => {
            [&b"{\"series\":["[..], &joined, b"]}"].concat()
        }
        Endpoint::Logs | Endpoint::CheckRun => [&b"["[..], &joined, b"]"].concat(),
        Endpoint::Events | Endpoint::EventsV2 => joined,
        // Not fuzzed through this target (binary kinds).
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => joined,
    }
}

// ---------------------------------------------------------------------------
// traces

/// Fuzz target `traces`.
pub fn traces(data: &[u8]) {
    use crate::traces::{decode, normalize, pb, stats};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if selector % 4 == 3 {
        let mut r = crate::traces::msgpack::Reader::new(body);
        if let Ok(s) = stats::ClientStats::from_msgpack(&mut r) {
            let again = s.to_msgpack();
            let mut r = crate::traces::msgpack::Reader::new(&again);
            assert_eq!(stats::ClientStats::from_msgpack(&mut r).ok(), Some(s));
        }
        return;
    }
    let decoded = match selector % 4 {
        0 => decode::v03(body),
        1 => decode::v04(body),
        _ => decode::v05(body),
    };
    let Ok(mut traces) = decoded else { return };
    if normalize::normalize(&mut traces, "go").is_err() {
        return;
    }
    let mut items = Vec::new();
    for trace in &traces {
        for span in trace {
            assert!(span.trace_id != 0 && span.span_id != 0);
            assert_eq!(span.trace_id, trace[0].trace_id);
            assert!(span.start >= 946_684_800_000_000_000 && span.duration >= 0);
            assert!(span.service.len() <= 100 && span.name.len() <= 100);
            assert!(!span.resource.is_empty() || span.name.is_empty());
        }
        let tracer = pb::TracerPayload::default();
        let chunk = pb::TraceChunk::default();
        let framed = crate::traces::frame_chunk(&tracer, &chunk, trace);
        let back = <pb::AgentPayload as prost::Message>::decode(framed.as_slice());
        assert!(back.is_ok(), "a framed chunk does not decode: {back:?}");
        let back = back.unwrap_or_default();
        let expected: Vec<pb::Span> = trace.iter().map(|s| s.to_pb()).collect();
        assert_eq!(back.tracer_payloads[0].chunks[0].spans, expected);
        items.push(framed);
    }
    piece_round_trip(&items);
    for s in stats::compute(&traces, &stats::Origin::default()) {
        let bytes = s.to_msgpack();
        let mut r = crate::traces::msgpack::Reader::new(&bytes);
        assert_eq!(stats::ClientStats::from_msgpack(&mut r).ok(), Some(s));
    }
}

/// The framed chunks stored as a piece (`record::pack_piece`) give back
/// their bytes, and sent (spliced) decode as the payload of all of them.
fn piece_round_trip(items: &[Vec<u8>]) {
    use crate::pipeline::record::{self, Ready};
    use crate::site::Endpoint;
    let joined = record::join_binary(items);
    let Some(piece) = record::pack_piece(Endpoint::Traces, 1, &joined) else {
        let limits = Endpoint::Traces.limits();
        let fits = joined.len() < limits.max_uncompressed / 2 && items.len() <= limits.max_items;
        assert!(
            items.is_empty() || !fits,
            "{} items that fit were not packed",
            items.len()
        );
        return;
    };
    let ready = Ready::parse(&bytes::Bytes::from(piece));
    let ready = ready.as_ref().ok().filter(|r| r.is_piece());
    assert!(ready.is_some(), "a piece does not parse as one");
    let Some(ready) = ready else { return };
    let back = ready.items(Endpoint::Traces).unwrap_or_default();
    assert!(back.iter().map(|b| &b[..]).eq(items.iter().map(|i| &i[..])));
    let sent = ready.payload(Endpoint::Traces);
    let body = crate::codec::decompress(sent.encoding, &sent.body, 1 << 26).unwrap_or_default();
    let mut want = items.concat();
    want.extend_from_slice(crate::traces::agent_payload_tail());
    assert!(body == want, "the spliced payload differs from its items");
}

/// Seeds for [`traces`]: (name, selector, body).
pub(crate) fn sample_traces() -> Vec<(&'static str, u8, Vec<u8>)> {
    use crate::traces::msgpack::write;
    let start = NOW_MS * 1_000_000;
    let v03 = format!(
        r#"[[{{"trace_id":7,"span_id":1,"name":"web.request","service":"Shop","resource":"/","start":{start},"duration":1000,"meta":{{"env":"prod","http.status_code":"200"}},"metrics":{{"_dd.measured":1}}}},{{"trace_id":7,"span_id":2,"parent_id":1,"name":"db","service":"db","start":{start},"duration":10,"error":1}}]]"#
    );
    let mut v04 = Vec::new();
    write::array(&mut v04, 1);
    write::array(&mut v04, 1);
    write::map(&mut v04, 7);
    write::kv_str(&mut v04, "service", "svc");
    write::kv_str(&mut v04, "name", "op");
    write::kv_uint(&mut v04, "trace_id", 3);
    write::kv_uint(&mut v04, "span_id", 4);
    write::str(&mut v04, "start");
    write::sint(&mut v04, start);
    write::str(&mut v04, "duration");
    write::sint(&mut v04, 5);
    write::str(&mut v04, "meta");
    write::map(&mut v04, 1);
    write::kv_str(&mut v04, "ddrelay.tenant", "acme");
    let mut v05 = Vec::new();
    write::array(&mut v05, 2);
    write::array(&mut v05, 3);
    for s in ["", "svc", "op"] {
        write::str(&mut v05, s);
    }
    write::array(&mut v05, 1);
    write::array(&mut v05, 1);
    write::array(&mut v05, 12);
    for v in [1u64, 2, 2, 9, 9, 0] {
        write::uint(&mut v05, v);
    }
    write::sint(&mut v05, start);
    write::sint(&mut v05, 7);
    write::sint(&mut v05, 0);
    write::map(&mut v05, 0);
    write::map(&mut v05, 0);
    write::uint(&mut v05, 0);
    let origin = crate::traces::stats::Origin::default();
    let stats = crate::traces::decode::v03(v03.as_bytes())
        .ok()
        .and_then(|t| {
            let s = crate::traces::stats::compute(&t, &origin);
            s.first().map(|s| s.to_msgpack())
        })
        .unwrap_or_default();
    vec![
        ("v03", 0, v03.into_bytes()),
        ("v04", 1, v04),
        ("v05", 2, v05),
        ("client_stats", 3, stats),
    ]
}

// ---------------------------------------------------------------------------
// callback_query

/// Fuzz target `callback_query`.
pub fn callback_query(data: &[u8]) {
    // As the listener sees it, when the bytes are a valid request target…
    if let Ok(query) = std::str::from_utf8(data)
        && let Ok(uri) = format!("/oauth/callback?{query}").parse::<axum::http::Uri>()
        && let Ok(axum::extract::Query(q)) =
            axum::extract::Query::<CallbackQuery>::try_from_uri(&uri)
    {
        check_callback(&q);
    }
    // …and with every byte a URI cannot hold percent-encoded, so the
    // deserializer sees arbitrary decoded bytes too.
    let mut escaped = String::with_capacity(data.len() * 3);
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            escaped.push(char::from(b));
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    if let Ok(uri) = format!("/oauth/callback?{escaped}").parse::<axum::http::Uri>()
        && let Ok(axum::extract::Query(q)) =
            axum::extract::Query::<CallbackQuery>::try_from_uri(&uri)
    {
        check_callback(&q);
    }
}

/// A failure page escapes everything it shows: it has as many `<` as the
/// same page with empty texts.
fn check_page(page: &crate::oauth::pages::Page) {
    let html = page.html();
    let bare = crate::oauth::pages::Page::failure(page.status, "", "", "").html();
    assert_eq!(
        html.matches('<').count(),
        bare.matches('<').count(),
        "unescaped markup in a page: {html}"
    );
    assert!(page.status.is_client_error(), "{}", page.status);
}

fn check_callback(q: &CallbackQuery) {
    match oauth::check_params(q) {
        Ok(state) => {
            assert!(!state.is_empty() && state.len() <= MAX_PARAM);
            assert!(!q.any_too_long());
        }
        Err(page) => check_page(&page),
    }
    let all = AllowedSites::default();
    let restricted = AllowedSites::from_values(&["EU1".to_string(), "us5.datadoghq.com".into()])
        .unwrap_or_default();
    for allowed in [&all, &restricted] {
        match oauth::callback_site(allowed, q.domain.as_deref()) {
            Ok(site) => check_api_site(allowed, q.domain.as_deref().unwrap_or_default(), site),
            Err(page) => check_page(&page),
        }
    }
    // Every value, whatever its parameter, through every site parser.
    for v in [
        &q.code,
        &q.state,
        &q.domain,
        &q.site,
        &q.dd_oid,
        &q.dd_org_name,
        &q.error,
        &q.error_description,
    ]
    .into_iter()
    .flatten()
    {
        check_site_value(v, &all, &restricted);
    }
}

/// `site` is where a client secret would be sent for `domain`: it must be
/// one of the known sites, allowed, with exactly that domain.
fn check_api_site(allowed: &AllowedSites, domain: &str, site: &'static Site) {
    assert!(
        SITES.iter().any(|s| std::ptr::eq(s, site)),
        "a site outside SITES"
    );
    assert!(
        domain.eq_ignore_ascii_case(site.domain),
        "`{domain}` accepted as {}",
        site.domain
    );
    assert!(allowed.iter().any(|s| std::ptr::eq(s, site)), "not allowed");
    let api = site.host(site::HostKind::Api);
    let url = url::Url::parse(&site.url(site::HostKind::Api, "/oauth2/v1/token"));
    assert!(
        url.as_ref()
            .is_ok_and(|u| u.host_str() == Some(api.as_str())),
        "token URL host for {domain}"
    );
}

/// Independent check that a host is one DNS label (lowercase letters,
/// digits, inner dashes).
fn one_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_web_site(value: &str, web: &WebSite) {
    let site = web.site;
    assert!(SITES.iter().any(|s| std::ptr::eq(s, site)));
    let host = web.host.as_str();
    let under_site = host
        .strip_suffix(site.domain)
        .and_then(|p| p.strip_suffix('.'))
        .is_some_and(|label| {
            one_label(label) && !["api", "http-intake", "intake", "agent", "trace"].contains(&label)
        });
    assert!(
        host == site.web_host || under_site,
        "`{value}` gave web host `{host}` for {}",
        site.domain
    );
    // The authorize URL really goes to that host, at the authorize path.
    let url = url::Url::parse(&web.authorize_url());
    assert!(
        url.as_ref().is_ok_and(|u| u.scheme() == "https"
            && u.host_str() == Some(host)
            && u.port().is_none()
            && u.path() == "/oauth2/v1/authorize"
            && u.query().is_none()),
        "`{value}` gave authorize URL {:?}",
        web.authorize_url()
    );
    assert_eq!(
        Site::classify_host(host).map(|(s, r)| (s.domain, r)),
        Some((site.domain, HostRole::Web))
    );
}

fn check_site_value(v: &str, all: &AllowedSites, restricted: &AllowedSites) {
    if let Some(site) = Site::by_domain(v) {
        assert!(v.eq_ignore_ascii_case(site.domain));
    }
    for allowed in [all, restricted] {
        if let Ok(site) = allowed.by_domain(v) {
            check_api_site(allowed, v, site);
        }
        if let Ok(web) = allowed.web_site(v) {
            check_web_site(v, &web);
            assert!(allowed.iter().any(|s| std::ptr::eq(s, web.site)));
        }
    }
    if let Ok(web) = WebSite::parse(v) {
        check_web_site(v, &web);
    }
}

// ---------------------------------------------------------------------------
// queue_segment

/// A record as this module's own parser reads it, independent of
/// `queue::format`: the layout documented in [`crate::queue`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    stream: u8,
    items: u32,
    seq: u64,
    created_ms: i64,
    oldest_ms: i64,
    newest_ms: i64,
    tenant: Vec<u8>,
    payload: Vec<u8>,
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// The seq of a record header (with its tenant) that checks out at the
/// start of `b`, whether or not its payload is there or intact.
fn header_seq_at(b: &[u8]) -> Option<u64> {
    // Flags: bit 0 MORE, bit 1 LZ4; any other bit is not a record.
    if b.len() < 60 || &b[0..4] != b"DDRQ" || b[4] != 1 || b[5] & !3 != 0 || b[7] != 0 {
        return None;
    }
    if b[10] != 0 || b[11] != 0 {
        return None;
    }
    let tenant = b.get(60..60 + le(b, 8, 2) as usize)?;
    let hcrc = crc32c::crc32c_append(crc32c::crc32c(&b[..56]), tenant);
    (u64::from(hcrc) == le(b, 56, 4) && std::str::from_utf8(tenant).is_ok()).then(|| le(b, 20, 8))
}

/// What is at the start of a segment's bytes.
enum AtOffset {
    /// A whole record whose checksums hold, its payload decoded.
    Valid(Parsed),
    /// Checksums hold but the LZ4 payload does not decode to its stated
    /// length (only a crafted file has one): the queue must never hand it
    /// out, and it may count it at recovery (payloads of old segments are
    /// checked when read).
    Undecodable,
    Nothing,
}

/// Parses a whole, checksum-valid record at the start of `b`.
fn parse_at(b: &[u8]) -> AtOffset {
    match parse_stored(b) {
        None => AtOffset::Nothing,
        Some(p) if b[5] & 2 == 0 => AtOffset::Valid(p),
        Some(mut p) => {
            // LZ4: u32 LE original length, then an LZ4 block of exactly it
            // (at most 1 GiB, the queue's bound).
            let n = p.payload.get(..4).map(|n| le(n, 0, 4) as usize);
            match n
                .filter(|n| *n <= 1 << 30)
                .map(|n| (n, lz4_flex::block::decompress(&p.payload[4..], n)))
            {
                Some((n, Ok(raw))) if raw.len() == n => {
                    p.payload = raw;
                    AtOffset::Valid(p)
                }
                _ => AtOffset::Undecodable,
            }
        }
    }
}

/// Parses a whole, checksum-valid record (payload as stored).
fn parse_stored(b: &[u8]) -> Option<Parsed> {
    header_seq_at(b)?;
    let tenant_len = le(b, 8, 2) as usize;
    let payload_len = le(b, 16, 4) as usize;
    let end = 60usize.checked_add(tenant_len)?.checked_add(payload_len)?;
    if b.len() < end {
        return None;
    }
    let tenant = &b[60..60 + tenant_len];
    let payload = &b[60 + tenant_len..end];
    if u64::from(crc32c::crc32c(payload)) != le(b, 52, 4) {
        return None;
    }
    Some(Parsed {
        stream: b[6],
        items: le(b, 12, 4) as u32,
        seq: le(b, 20, 8),
        created_ms: le(b, 28, 8) as i64,
        oldest_ms: le(b, 36, 8) as i64,
        newest_ms: le(b, 44, 8) as i64,
        tenant: tenant.to_vec(),
        payload: payload.to_vec(),
    })
}

fn take_all(q: &Queue) -> Vec<queue::Taken> {
    let mut out = Vec::new();
    for (tenant, stream) in q.ready_streams() {
        match q.take(&tenant, stream, usize::MAX, usize::MAX) {
            Ok(t) => out.extend(t),
            Err(e) => panic!("take failed: {e}"),
        }
    }
    out
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("ddrelay-fuzz-")
            .tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    match made {
        Ok(d) => d,
        Err(e) => panic!("cannot make a scratch dir: {e}"),
    }
}

/// Fuzz target `queue_segment`. Byte 0: bit 0 set means bytes 1..3 (LE)
/// give the length of an ack file that follows; the rest is segment 1.
pub fn queue_segment(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (ack, seg) = if sel & 1 == 1 && rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        (Some(&rest[2..2 + n]), &rest[2 + n..])
    } else {
        (None, rest)
    };
    let dir = scratch_dir();
    let write = |name: &str, bytes: &[u8]| {
        if let Err(e) = std::fs::write(dir.path().join(name), bytes) {
            panic!("cannot write {name}: {e}");
        }
    };
    write("00000001.seg", seg);
    if let Some(ack) = ack {
        write("00000001.ack", ack);
    }
    let limits = Limits {
        max_bytes: 1 << 30,
        tenant_max_bytes: 1 << 30,
        held_max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        preallocate: true,
    };

    // Every checksum-valid record in the file, at any offset.
    // And how often each seq has a header that checks out: the queue never
    // writes one seq twice into one segment (compaction copies go to
    // another), so a file that does is crafted.
    let mut valid: Vec<Parsed> = Vec::new();
    let mut undecodable = 0u64;
    let mut per_seq: HashMap<u64, usize> = HashMap::new();
    for off in memchr::memmem::find_iter(seg, b"DDRQ") {
        if let Some(seq) = header_seq_at(&seg[off..]) {
            *per_seq.entry(seq).or_default() += 1;
        }
        match parse_at(&seg[off..]) {
            AtOffset::Valid(p) => valid.push(p),
            AtOffset::Undecodable => undecodable += 1,
            AtOffset::Nothing => {}
        }
    }
    let unique_seqs = per_seq.values().all(|n| *n == 1);

    let first = {
        let (q, report) = match Queue::open(dir.path(), limits) {
            Ok(x) => x,
            Err(e) => panic!("a segment's content made open fail: {e}"),
        };
        let taken = take_all(&q);
        let mut got: BTreeMap<u64, Parsed> = BTreeMap::new();
        for t in &taken {
            let p = Parsed {
                stream: t.stream,
                items: t.items,
                seq: t.id.seq(),
                created_ms: t.created_ms,
                oldest_ms: t.oldest_ms,
                newest_ms: t.newest_ms,
                tenant: t.tenant.as_bytes().to_vec(),
                payload: t.payload.to_vec(),
            };
            assert!(
                valid.contains(&p),
                "the queue handed out a record that is not in the file with valid checksums: {p:?}"
            );
            assert!(got.insert(p.seq, p).is_none(), "a seq handed out twice");
        }
        // Recovery may count an undecodable record that `take` then drops.
        let taken_items = taken.iter().map(|t| u64::from(t.items)).sum::<u64>();
        if undecodable == 0 {
            assert_eq!(report.records, taken.len() as u64, "recovered record count");
            assert_eq!(report.items, taken_items, "recovered item count");
        } else {
            assert!(
                report.records >= taken.len() as u64,
                "recovered record count"
            );
            assert!(report.records - taken.len() as u64 <= undecodable);
            assert!(report.items >= taken_items, "recovered item count");
        }
        assert!(report.truncated_bytes <= seg.len() as u64);
        got
    };
    // Recovery is idempotent: reopening finds the same records and nothing
    // left to truncate. (In a crafted file holding one seq twice, a corrupt
    // copy's DROP also kills the good copy at the next recovery: data is
    // lost, never invented or misrouted, so only that is checked then.)
    let (q, report) = match Queue::open(dir.path(), limits) {
        Ok(x) => x,
        Err(e) => panic!("reopening failed: {e}"),
    };
    let second: BTreeMap<u64, Vec<u8>> = take_all(&q)
        .into_iter()
        .map(|t| (t.id.seq(), t.payload.to_vec()))
        .collect();
    assert_eq!(report.truncated_bytes, 0, "second recovery truncated again");
    if unique_seqs {
        let first: BTreeMap<u64, Vec<u8>> =
            first.into_iter().map(|(k, p)| (k, p.payload)).collect();
        assert_eq!(first, second, "recovery is not idempotent");
    } else {
        assert!(second.keys().all(|k| first.contains_key(k)));
    }
}

// ---------------------------------------------------------------------------
// Seed corpus

/// Sample bodies of every kind, as the relay's tests and Datadog's clients
/// send them (timestamps at [`NOW_MS`]).
pub(crate) fn sample_bodies() -> Vec<(&'static str, Endpoint, String)> {
    let s = NOW_MS / 1000;
    vec![
        (
            "series_v2",
            Endpoint::SeriesV2,
            format!(
                r#"{{"series":[{{"metric":"app.requests","type":1,"points":[{{"timestamp":{s},"value":3.5}}],"tags":["env:prod","team:a"],"resources":[{{"name":"h1","type":"host"}}],"unit":"request"}},{{"metric":"app.gauge","type":3,"points":[{{"timestamp":{s},"value":-1e3}}]}}]}}"#
            ),
        ),
        (
            "series_v1",
            Endpoint::SeriesV1,
            format!(
                r#"{{"series":[{{"metric":"app.v1","type":"gauge","points":[[{s},1.0],[{s},2]],"host":"h","tags":["a:b"]}}]}}"#
            ),
        ),
        (
            "logs",
            Endpoint::Logs,
            format!(
                r#"[{{"message":"hello\nworld","ddsource":"app","ddtags":"env:prod","hostname":"h","service":"svc","timestamp":{NOW_MS}}},{{"message":{{"nested":[1,2,{{"x":null}}]}},"status":"info"}}]"#
            ),
        ),
        (
            "log_object",
            Endpoint::Logs,
            r#" { "message" : "one log" , "attr" : "\u00e9\ud83d\ude00" } "#.to_string(),
        ),
        (
            "event",
            Endpoint::Events,
            format!(
                r#"{{"title":"Deploy","text":"v1.2 deployed","tags":["env:prod"],"alert_type":"info","priority":"normal","aggregation_key":"deploy","date_happened":{s}}}"#
            ),
        ),
        (
            "check_run",
            Endpoint::CheckRun,
            format!(
                r#"[{{"check":"app.ok","host_name":"h","status":0,"tags":["env:prod"],"timestamp":{s}}},{{"check":"app.db","host_name":"h","status":2,"message":"down"}}]"#
            ),
        ),
        (
            "distribution",
            Endpoint::Distribution,
            format!(
                r#"{{"series":[{{"metric":"req.latency","points":[[{s},[1.5,2,9]]],"type":"distribution","tags":["env:prod"],"host":"h"}}]}}"#
            ),
        ),
        (
            "event_v2",
            Endpoint::EventsV2,
            r#"{"data":{"type":"event","attributes":{"title":"Flag","category":"change","attributes":{"changed_resource":{"name":"f","type":"feature_flag"}},"tags":["env:prod"]}}}"#
                .to_string(),
        ),
        (
            "stale",
            Endpoint::SeriesV1,
            format!(
                r#"{{"series":[{{"metric":"a","points":[[1,2],[{s},3]]}},{{"metric":"b","points":[[{},4]]}}]}}"#,
                s + 3600
            ),
        ),
        (
            "bad_items",
            Endpoint::SeriesV2,
            r#"{"series":[{"metric":"1bad","points":[{"timestamp":1,"value":"x"}],"type":9}]}"#
                .to_string(),
        ),
        (
            "deep",
            Endpoint::Logs,
            format!("[{}{}]", "[".repeat(200), "]".repeat(200)),
        ),
        (
            "big_numbers",
            Endpoint::CheckRun,
            r#"{"check":"c","host_name":"h","status":1e999,"timestamp":123456789012345678901234567890}"#
                .to_string(),
        ),
    ]
}

/// Callback queries: a real one, Datadog's error answer, tampered domains.
pub(crate) fn sample_queries() -> Vec<(&'static str, String)> {
    let state = "q9c2wG3mZ1oL4x8Rk7YbP0sTnVdA6eHfJuIiCgKlMpN";
    vec![
        (
            "ok",
            format!(
                "code=abc123&state={state}&domain=datadoghq.eu&site=https%3A%2F%2Fapp.datadoghq.eu&dd_oid=1234&dd_org_name=Acme%20Inc"
            ),
        ),
        (
            "custom_site",
            format!("code=c&state={state}&domain=datadoghq.com&site=https://bigcorp.datadoghq.com"),
        ),
        (
            "denied",
            format!("error=access_denied&error_description=The+user+denied&state={state}"),
        ),
        (
            "evil_domain",
            format!("code=c&state={state}&domain=datadoghq.com.evil.example"),
        ),
        (
            "web_domain",
            format!("code=c&state={state}&domain=app.datadoghq.com&site=api.datadoghq.com"),
        ),
        (
            "encoded",
            format!(
                "code=c&state={state}&domain=DATADOGHQ.EU.&site=us5.datadoghq.com%2F&dd_org_name=%3Cscript%3E"
            ),
        ),
        ("dup", "state=a&state=b&domain=ddog-gov.com".to_string()),
    ]
}

/// A segment file with `records` (tenant, stream, items, payload), stamped
/// with seqs from 1; `more` sets the batch flag on all but the last; `lz4`
/// stores payloads compressed where that pays.
fn segment(records: &[(&str, u8, u32, &[u8])], more: bool, lz4: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (tenant, stream, items, payload)) in records.iter().enumerate() {
        let mut r = queue::format::encode(
            tenant, *stream, *items, NOW_MS, NOW_MS, NOW_MS, payload, lz4,
        );
        let flag = if more && i + 1 < records.len() { 1 } else { 0 };
        queue::format::stamp(&mut r, i as u64 + 1, flag);
        out.extend_from_slice(&r);
    }
    out
}

/// Segment files: valid, a batch, a torn tail, a corrupt middle, with acks.
pub(crate) fn sample_segments() -> Vec<(&'static str, Vec<u8>)> {
    let recs: [(&str, u8, u32, &[u8]); 3] = [
        ("acme", 1, 2, b"{\"metric\":\"a\"}\n{\"metric\":\"b\"}"),
        ("globex", 3, 1, b"{\"message\":\"hi\"}"),
        (
            "acme",
            5,
            1,
            b"{\"check\":\"c\",\"host_name\":\"h\",\"status\":0}",
        ),
    ];
    let valid = segment(&recs, false, false);
    let batch = segment(&recs, true, false);
    let series =
        "{\"metric\":\"bench.metric\",\"points\":[[1700000000,1.5]],\"tags\":[\"env:prod\"]}\n"
            .repeat(8);
    let compressed = segment(
        &[
            ("acme", 1, 8, series.as_bytes()),
            ("globex", 3, 1, b"{\"message\":\"short\"}"),
        ],
        false,
        true,
    );
    let mut torn = valid.clone();
    torn.truncate(valid.len() - 7);
    let mut corrupt = valid.clone();
    corrupt[70] ^= 0xff;
    // A written-ahead segment after a crash: records, then zeros; and one
    // whose last record was torn inside those zeros (payload cut short).
    let mut zeroed = valid.clone();
    zeroed.resize(valid.len() + 4096, 0);
    let mut torn_in_zeros = valid.clone();
    let cut = torn_in_zeros.len() - 7;
    torn_in_zeros[cut..].fill(0);
    torn_in_zeros.resize(valid.len() + 4096, 0);
    let mut with_ack = vec![1u8, 12, 0];
    queue::format::encode_ack(2, &mut with_ack);
    with_ack.extend_from_slice(&valid);
    vec![
        ("valid", [&[0u8][..], &valid].concat()),
        ("batch", [&[0u8][..], &batch].concat()),
        ("lz4", [&[0u8][..], &compressed].concat()),
        ("torn_tail", [&[0u8][..], &torn].concat()),
        ("corrupt_middle", [&[0u8][..], &corrupt].concat()),
        ("acked", with_ack),
        ("zeroed_tail", [&[0u8][..], &zeroed].concat()),
        ("torn_in_zeros", [&[0u8][..], &torn_in_zeros].concat()),
    ]
}

/// Writes the seed corpus under `fuzz_dir/corpus/<target>/`.
pub fn write_corpus(fuzz_dir: &Path) -> std::io::Result<()> {
    let put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    };
    for (name, endpoint, body) in sample_bodies() {
        for encoding in ENCODINGS {
            let enc = match encoding {
                Encoding::Identity => "plain",
                Encoding::Gzip => "gzip",
                Encoding::Deflate => "deflate",
                Encoding::Zstd => "zstd",
            };
            let wire = codec::compress(encoding, 3, body.as_bytes());
            let data = [&[selector(endpoint, encoding)][..], &wire].concat();
            put("ingest", &format!("{name}-{enc}"), &data)?;
        }
    }
    // Bodies the ingest tests call hostile: invalid UTF-8, a bomb.
    put(
        "ingest",
        "invalid_utf8",
        &[
            selector(Endpoint::Logs, Encoding::Identity),
            b'[',
            b'"',
            0xff,
            b'"',
            b']',
        ],
    )?;
    let bomb = codec::compress(Encoding::Zstd, 19, &vec![b' '; DECOMPRESS_LIMIT + 1]);
    put(
        "ingest",
        "zstd_bomb",
        &[&[selector(Endpoint::Logs, Encoding::Zstd)][..], &bomb].concat(),
    )?;
    for (name, query) in sample_queries() {
        put("callback_query", name, query.as_bytes())?;
    }
    for (name, selector, body) in sample_traces() {
        put("traces", name, &[&[selector][..], &body].concat())?;
    }
    for (name, bytes) in sample_segments() {
        put("queue_segment", name, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fuzz_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// Runs `check` on every file of the corpus and regressions of `target`;
    /// returns how many there were.
    fn replay(target: &str, check: fn(&[u8])) -> usize {
        let mut n = 0;
        for kind in ["corpus", "regressions"] {
            let dir = fuzz_dir().join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{} fails", path.display());
                n += 1;
            }
        }
        n
    }

    #[test]
    fn write_fuzz_corpus() {
        if std::env::var_os("DDRELAYTEST_WRITE_FUZZ_CORPUS").is_some() {
            write_corpus(&fuzz_dir()).unwrap();
        }
    }

    #[test]
    fn ingest_corpus_and_regressions_hold() {
        assert!(replay("ingest", ingest) >= 20);
    }

    #[test]
    fn callback_corpus_and_regressions_hold() {
        assert!(replay("callback_query", callback_query) >= 5);
    }

    #[test]
    fn traces_corpus_and_regressions_hold() {
        assert!(replay("traces", traces) >= 4);
    }

    /// Every trace seed decodes and passes the span rules, so the fuzzer
    /// starts from inputs that reach the framing and the stats.
    #[test]
    fn trace_seeds_reach_the_stats() {
        for (name, selector, body) in sample_traces() {
            let decoded = match selector {
                0 => crate::traces::decode::v03(&body),
                1 => crate::traces::decode::v04(&body),
                2 => crate::traces::decode::v05(&body),
                _ => continue,
            };
            let mut t = decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            crate::traces::normalize::normalize(&mut t, "")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn queue_corpus_and_regressions_hold() {
        assert!(replay("queue_segment", queue_segment) >= 4);
    }

    /// A log over 1 MB (beyond the fuzzer's decompression limit, so
    /// checked here): cut, and every promise of `Validated` holds.
    #[test]
    fn truncated_logs_keep_the_promises() {
        for message in ["x".repeat(1_000_100), "\\\"é".repeat(300_000)] {
            let body = format!(r#"[{{"message":"{message}","a":1}},{{"b":[1]}}]"#);
            check_validate(Endpoint::Logs, body.as_bytes());
            let v = validate(Endpoint::Logs, body.as_bytes(), NOW_MS).unwrap();
            assert_eq!((v.items, v.dropped.truncated), (2, 1));
        }
    }

    /// The seeds mean what their names say, so the fuzzer starts from
    /// inputs that reach deep.
    #[test]
    fn seeds_reach_the_interesting_paths() {
        for (name, endpoint, body) in sample_bodies() {
            check_validate(endpoint, body.as_bytes());
            let ok = validate(endpoint, body.as_bytes(), NOW_MS).is_ok();
            let want = !matches!(name, "bad_items" | "deep" | "big_numbers");
            assert_eq!(
                ok,
                want,
                "{name}: {:?}",
                validate(endpoint, body.as_bytes(), NOW_MS)
            );
        }
        for (name, bytes) in sample_segments() {
            let seg = if name == "acked" {
                &bytes[15..]
            } else {
                &bytes[1..]
            };
            let valid = matches!(parse_at(seg), AtOffset::Valid(_));
            assert_eq!(valid, name != "corrupt_middle", "{name}");
            // The lz4 seed starts with a compressed record.
            assert_eq!(seg[5] & 2 != 0, name == "lz4", "{name}");
        }
        let ok = &sample_queries()[0].1;
        let uri: axum::http::Uri = format!("/oauth/callback?{ok}").parse().unwrap();
        let axum::extract::Query(q) =
            axum::extract::Query::<CallbackQuery>::try_from_uri(&uri).unwrap();
        assert!(oauth::check_params(&q).is_ok());
        assert_eq!(
            oauth::callback_site(&AllowedSites::default(), q.domain.as_deref())
                .unwrap()
                .domain,
            "datadoghq.eu"
        );
    }
}
