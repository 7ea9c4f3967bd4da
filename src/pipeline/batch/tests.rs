//! The packer against every endpoint and encoding: wrappers and encodings
//! round-trip, each limit binds (compressed, uncompressed, items, item
//! size), an oversized item is named and nothing else lost, and property
//! tests (small limits, the real ones, splitting in halves after a 413)
//! that no payload exceeds a limit and no item is lost, duplicated or
//! reordered. `noise` is shared with the queue's tests.

use proptest::prelude::*;
use serde_json::value::RawValue;

use super::*;
use crate::codec;

const ENCODINGS: [Encoding; 4] = [
    Encoding::Identity,
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Zstd,
];

/// xorshift: reproducible noise without a dependency (alphanumeric, so no
/// compressor without entropy coding, LZ4 included, shrinks it).
pub(crate) fn noise(seed: u64, n: usize) -> Vec<u8> {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALNUM[(x % ALNUM.len() as u64) as usize]
        })
        .collect()
}

/// A JSON string item of exactly `len` bytes (≥ 2): random alphanumerics
/// (compresses ~1.3×) or a repeated phrase (compresses ~100×).
fn string_item(seed: u64, len: usize, random: bool) -> Vec<u8> {
    let body = if random {
        noise(seed, len - 2)
    } else {
        b"the quick brown fox "
            .iter()
            .cycle()
            .take(len - 2)
            .copied()
            .collect()
    };
    [b"\"".as_slice(), &body, b"\""].concat()
}

/// A series v2 item with ten random 20-character tags (~330 bytes).
fn random_series(seed: u64) -> Vec<u8> {
    let tags: Vec<String> = (0..10)
        .map(|t| {
            format!(
                "\"t{t}:{}\"",
                String::from_utf8(noise(seed * 16 + t, 20)).unwrap()
            )
        })
        .collect();
    format!(
        r#"{{"metric":"app.requests","type":1,"points":[{{"timestamp":1700000000,"value":{seed}}}],"tags":[{}]}}"#,
        tags.join(",")
    )
    .into_bytes()
}

/// Decompresses and parses a payload back into its items' bytes.
fn unpack(endpoint: Endpoint, p: &Payload) -> Vec<Vec<u8>> {
    let raw = codec::decompress(p.encoding, &p.body, p.uncompressed_len).unwrap();
    assert_eq!(raw.len(), p.uncompressed_len);
    #[derive(serde::Deserialize)]
    struct Series<'a> {
        #[serde(borrow)]
        series: Vec<&'a RawValue>,
    }
    let items: Vec<&RawValue> = match endpoint {
        Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => {
            assert!(raw.starts_with(br#"{"series":["#));
            serde_json::from_slice::<Series>(&raw).unwrap().series
        }
        Endpoint::Logs | Endpoint::CheckRun => serde_json::from_slice(&raw).unwrap(),
        Endpoint::Events | Endpoint::EventsV2 => vec![serde_json::from_slice(&raw).unwrap()],
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => {
            unreachable!("JSON kinds only")
        }
    };
    items.iter().map(|r| r.get().as_bytes().to_vec()).collect()
}

/// Checks everything `pack` promises, and returns the payloads.
fn check(packer: &Packer, endpoint: Endpoint, items: &[Vec<u8>]) -> Vec<Payload> {
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    let l = packer.limits();
    let mut next = 0;
    let mut payloads = Vec::new();
    for entry in packer.pack(&refs) {
        match entry {
            Ok(p) => {
                assert_eq!(p.first_item, next, "payloads out of order");
                assert!(p.item_count >= 1);
                assert!(
                    p.body.len() <= l.max_compressed,
                    "{} > {}",
                    p.body.len(),
                    l.max_compressed
                );
                assert!(p.uncompressed_len <= l.max_uncompressed);
                assert!(p.item_count <= l.max_items);
                assert!(
                    items[p.items()].iter().all(|i| i.len() <= l.max_item),
                    "an item over max_item was packed"
                );
                assert_eq!(p.encoding, packer.encoding);
                assert_eq!(
                    unpack(endpoint, &p),
                    items[p.items()].to_vec(),
                    "items differ"
                );
                next += p.item_count;
                payloads.push(p);
            }
            Err(e) => {
                assert_eq!(e.items().start, next, "{e}");
                let BatchError::Oversized { index, .. } = e else {
                    panic!("{e}")
                };
                // Really oversized: compressed alone it does not fit either.
                let item = &items[index];
                let f = frame(endpoint);
                let alone = [f.open, item, f.close].concat();
                assert!(
                    item.len() > l.max_item
                        || alone.len() > l.max_uncompressed
                        || codec::compress(packer.encoding, packer.level, &alone).len()
                            > l.max_compressed,
                    "item {index} refused but fits: {e}"
                );
                next += 1;
            }
        }
    }
    assert_eq!(next, items.len(), "items lost");
    payloads
}

#[test]
fn wrappers_and_encodings_round_trip() {
    let items: Vec<Vec<u8>> = vec![
        br#"{"metric":"a","points":[{"timestamp":1,"value":2}]}"#.to_vec(),
        br#"{"message":"hi","nested":{"a":[1,2]}}"#.to_vec(),
        br#"{"title":"t","text":"x"}"#.to_vec(),
    ];
    for endpoint in Endpoint::ALL {
        for encoding in ENCODINGS {
            let packer = Packer::new(endpoint, encoding, 1);
            let payloads = check(&packer, endpoint, &items);
            let want = if endpoint.one_per_request() { 3 } else { 1 };
            assert_eq!(payloads.len(), want, "{endpoint} {encoding:?}");
        }
    }
    let p = &Packer::new(Endpoint::Logs, Encoding::Identity, 1).pack(&[b"{}", b"{}"][..])[0];
    assert_eq!(p.as_ref().unwrap().body, Bytes::from_static(b"[{},{}]"));
    let p = &Packer::new(Endpoint::SeriesV2, Encoding::Identity, 1).pack(&[b"{}"][..])[0];
    assert_eq!(
        p.as_ref().unwrap().body,
        Bytes::from_static(br#"{"series":[{}]}"#)
    );
    assert!(
        Packer::new(Endpoint::Logs, Encoding::Gzip, 1)
            .pack::<[&[u8]]>(&[])
            .is_empty()
    );
}

/// Random tags: the 512,000-byte compressed cap binds, and payloads fill it.
#[test]
fn series_v2_compressed_cap_binds() {
    let items: Vec<Vec<u8>> = (0..9000).map(random_series).collect();
    for encoding in ENCODINGS {
        let packer = Packer::new(Endpoint::SeriesV2, encoding, 1);
        let payloads = check(&packer, Endpoint::SeriesV2, &items);
        assert!(payloads.len() >= 2, "{encoding:?}");
        for p in &payloads[..payloads.len() - 1] {
            let fill = p.body.len() as f64 / 512_000.0;
            assert!(fill > 0.98, "{encoding:?}: fill {fill:.3}");
            assert!(p.uncompressed_len < 5_242_880);
        }
    }
}

/// Highly compressible items: the uncompressed cap binds, not the compressed one.
#[test]
fn uncompressed_cap_binds() {
    // Series: 1 KiB items, ~5,120 per 5 MiB, well under 10,000.
    let items: Vec<Vec<u8>> = (0..12_000).map(|i| string_item(i, 1024, false)).collect();
    for encoding in [Encoding::Gzip, Encoding::Zstd] {
        let payloads = check(
            &Packer::new(Endpoint::SeriesV2, encoding, 1),
            Endpoint::SeriesV2,
            &items,
        );
        assert_eq!(payloads.len(), 3);
        for p in &payloads[..2] {
            assert!(
                p.uncompressed_len > 5_242_880 - 1025,
                "{}",
                p.uncompressed_len
            );
            assert!(p.body.len() < 100_000);
        }
    }
    // Logs: 10 KB entries, 500 per 5 MB.
    let items: Vec<Vec<u8>> = (0..1200).map(|i| string_item(i, 10_000, false)).collect();
    let payloads = check(
        &Packer::new(Endpoint::Logs, Encoding::Gzip, 1),
        Endpoint::Logs,
        &items,
    );
    let counts: Vec<usize> = payloads.iter().map(|p| p.item_count).collect();
    assert_eq!(counts, [499, 499, 202]);
}

#[test]
fn item_caps() {
    let items: Vec<Vec<u8>> = (0..2500)
        .map(|i| format!(r#"{{"message":"{i}"}}"#).into_bytes())
        .collect();
    let payloads = check(
        &Packer::new(Endpoint::Logs, Encoding::Gzip, 1),
        Endpoint::Logs,
        &items,
    );
    let counts: Vec<usize> = payloads.iter().map(|p| p.item_count).collect();
    assert_eq!(counts, [1000, 1000, 500]);
    let payloads = check(
        &Packer::new(Endpoint::Logs, Encoding::Gzip, 1).with_max_items(300),
        Endpoint::Logs,
        &items[..700],
    );
    let counts: Vec<usize> = payloads.iter().map(|p| p.item_count).collect();
    assert_eq!(counts, [300, 300, 100]);
    let payloads = check(
        &Packer::new(Endpoint::Events, Encoding::Deflate, 1),
        Endpoint::Events,
        &items[..5],
    );
    assert!(payloads.iter().all(|p| p.item_count == 1));
    assert_eq!(payloads.len(), 5);
    let packer =
        Packer::new(Endpoint::Events, Encoding::Gzip, 1).with_limits(Endpoint::Logs.limits());
    assert_eq!(packer.limits().max_items, 1);
}

#[test]
fn oversized_items_are_named_and_nothing_else_is_lost() {
    // A log above 1,000,000 bytes, between two good ones.
    let items = vec![
        string_item(1, 100, true),
        string_item(2, 1_000_001, false),
        string_item(3, 100, true),
        string_item(4, 1_000_000, true),
    ];
    let out = Packer::new(Endpoint::Logs, Encoding::Gzip, 1)
        .pack(&items.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let shape: Vec<Result<Range<usize>, Range<usize>>> = out
        .iter()
        .map(|r| r.as_ref().map(Payload::items).map_err(BatchError::items))
        .collect();
    assert_eq!(shape, [Ok(0..1), Err(1..2), Ok(2..4)]);
    check(
        &Packer::new(Endpoint::Logs, Encoding::Gzip, 1),
        Endpoint::Logs,
        &items,
    );

    // A series item whose worst case is above 512,000 but which compresses
    // below it: packed alone. One above max_item: refused.
    let items = vec![
        string_item(5, 510_000, true),
        string_item(6, 600_000, false),
    ];
    for encoding in ENCODINGS {
        let out = check(
            &Packer::new(Endpoint::SeriesV2, encoding, 1),
            Endpoint::SeriesV2,
            &items,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].items(), 0..1);
    }

    // Compressed alone still above the cap: refused, with the reason.
    let small = Limits {
        max_compressed: 1000,
        max_uncompressed: 10_000,
        max_items: 10,
        max_item: 10_000,
    };
    let items = vec![
        string_item(7, 900, true),
        string_item(8, 5000, true),
        string_item(9, 900, false),
    ];
    let packer = Packer::new(Endpoint::Logs, Encoding::Gzip, 1).with_limits(small);
    let out = packer.pack(&items.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let err = out[1].as_ref().unwrap_err();
    assert_eq!(err.items(), 1..2);
    assert!(err.to_string().contains("compresses to"), "{err}");
    check(&packer, Endpoint::Logs, &items);
}

/// Bursts: tiny and huge items interleaved, at the real limits.
#[test]
fn bursty_input_at_real_limits() {
    let mut items = Vec::new();
    for i in 0..60u64 {
        items.push(string_item(i, 40, i % 2 == 0));
        if i % 7 == 0 {
            items.push(string_item(i + 1000, 300_000, i % 3 == 0));
        }
        if i % 11 == 0 {
            items.push(string_item(i + 2000, 900_000, true));
        }
    }
    for endpoint in [
        Endpoint::SeriesV2,
        Endpoint::Logs,
        Endpoint::CheckRun,
        Endpoint::SeriesV1,
    ] {
        for encoding in ENCODINGS {
            check(&Packer::new(endpoint, encoding, 1), endpoint, &items);
        }
    }
}

fn arb_items() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec((2usize..3000, any::<u64>(), any::<bool>()), 0..60).prop_map(|specs| {
        specs
            .into_iter()
            .map(|(len, seed, random)| string_item(seed, len, random))
            .collect()
    })
}

fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    prop::sample::select(Endpoint::ALL.to_vec())
}

fn arb_encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(ENCODINGS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Small limits, so that every limit binds somewhere.
    #[test]
    fn never_exceeds_limits_nor_loses_items(
        endpoint in arb_endpoint(),
        encoding in arb_encoding(),
        level in 1i32..7,
        max_compressed in 40usize..6000,
        max_uncompressed in 40usize..12_000,
        max_items in 1usize..40,
        max_item in 2usize..12_000,
        items in arb_items(),
    ) {
        let limits = Limits { max_compressed, max_uncompressed, max_items, max_item };
        let packer = Packer::new(endpoint, encoding, level).with_limits(limits);
        check(&packer, endpoint, &items);
    }
}

/// What the sender does after an unexpected 413 (`send.rs`): re-pack the
/// payload's items with at most half as many per payload, recursively down
/// to one item. Returns the items in the order the leaves would be sent;
/// `check` verifies every level against every limit.
fn split_down(packer: Packer, endpoint: Endpoint, items: &[Vec<u8>]) -> Vec<Vec<u8>> {
    if items.len() <= 1 {
        return items.to_vec();
    }
    let half = packer.with_max_items(items.len().div_ceil(2));
    let mut out = Vec::new();
    for p in check(&half, endpoint, items) {
        assert!(p.item_count < items.len(), "a split did not shrink");
        out.extend(split_down(half, endpoint, &items[p.items()]));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Splitting in halves after a 413, at every level, never exceeds a
    /// limit and never loses, duplicates or reorders an item.
    #[test]
    fn splitting_in_halves_keeps_every_item_exactly_once(
        endpoint in arb_endpoint(),
        encoding in arb_encoding(),
        max_compressed in 200usize..6000,
        max_uncompressed in 200usize..12_000,
        max_items in 1usize..40,
        items in arb_items(),
    ) {
        let limits = Limits { max_compressed, max_uncompressed, max_items, max_item: 12_000 };
        let packer = Packer::new(endpoint, encoding, 1).with_limits(limits);
        for p in check(&packer, endpoint, &items) {
            let leaves = split_down(packer, endpoint, &items[p.items()]);
            prop_assert_eq!(leaves, items[p.items()].to_vec());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// The real limits, with items large enough to reach them.
    #[test]
    fn never_exceeds_real_limits(
        endpoint in arb_endpoint(),
        encoding in arb_encoding(),
        specs in prop::collection::vec((2usize..400_000, any::<u64>(), any::<bool>()), 0..40),
    ) {
        let items: Vec<Vec<u8>> = specs.into_iter().map(|(l, s, r)| string_item(s, l, r)).collect();
        check(&Packer::new(endpoint, encoding, 1), endpoint, &items);
    }
}
