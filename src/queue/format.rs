//! Record framing: encoding, decoding and checksums of one queue record.
//!
//! Owns the byte layout documented in [`crate::queue`] ("Record framing") and
//! nothing else: it does no I/O and keeps no state. Every field is
//! little-endian. A record is a fixed 60-byte header, the tenant id (UTF-8)
//! and the payload:
//!
//! ```text
//! off len field
//!   0   4 magic        b"DDRQ"
//!   4   1 version      1
//!   5   1 flags        bit 0 MORE: the next record belongs to the same atomic batch
//!                      bit 1 LZ4: the payload is stored LZ4-compressed
//!   6   1 stream       opaque stream code
//!   7   1 gen_lo       generation, bits 0-7
//!   8   2 tenant_len
//!  10   2 gen_hi       generation, bits 8-23
//!  12   4 items
//!  16   4 payload_len
//!  20   8 seq          the record id
//!  28   8 created_ms
//!  36   8 oldest_ms
//!  44   8 newest_ms
//!  52   4 pcrc         CRC32C(payload)
//!  56   4 hcrc         CRC32C(bytes 0..56 ‖ tenant)
//!  60   … tenant, then payload
//! ```
//!
//! The generation is an opaque 24-bit number the appender gives (the
//! tenant's connection generation, `store::Tenant::generation`, modulo
//! 2^24); records written before it existed carry 0. Bytes 7, 10 and 11
//! were reserved and zero before, so such records read as generation 0, and
//! builds from before refuse (count corrupt and skip) a record whose
//! generation is not 0: drain the queue before going back to one.
//!
//! `hcrc` covers the header (which includes `pcrc`) and the tenant, so the
//! two together cover header and payload; a corrupted length is caught by
//! `hcrc` before it is trusted. The split lets the writer stamp `seq` and
//! the `MORE` flag (and compaction clear it) by re-computing only `hcrc`.
//!
//! A payload flagged `LZ4` is a u32 LE (the original payload's length) and
//! an LZ4 block of it; `payload_len` and `pcrc` are of the stored bytes.
//! Records are compressed only where it saves at least an eighth.

/// The first four bytes of every record.
pub(crate) const MAGIC: [u8; 4] = *b"DDRQ";
/// The framing version this code writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Generations are stored modulo this (24 bits).
pub(crate) const GENERATION_MODULUS: u32 = 1 << 24;
/// Size of the fixed part of the header.
pub(crate) const HEADER_LEN: usize = 60;
/// Flag: another record of the same atomic `append_batch` follows.
pub(crate) const FLAG_MORE: u8 = 1;
/// Flag: the payload is stored as its length and an LZ4 block.
pub(crate) const FLAG_LZ4: u8 = 2;
/// The flags a record may carry.
const KNOWN_FLAGS: u8 = FLAG_MORE | FLAG_LZ4;
/// Largest payload an `LZ4` record may claim once decompressed: a corrupt
/// but checksum-valid length must not make `take` allocate without bound.
/// Ingest bodies are far smaller (`server.max_decompressed_body`).
pub(crate) const MAX_RAW_PAYLOAD: usize = 1 << 30;

const OFF_FLAGS: usize = 5;
const OFF_SEQ: usize = 20;
const OFF_PCRC: usize = 52;
const OFF_HCRC: usize = 56;

/// The decoded fixed header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) flags: u8,
    pub(crate) stream: u8,
    pub(crate) generation: u32,
    pub(crate) tenant_len: u16,
    pub(crate) items: u32,
    pub(crate) payload_len: u32,
    pub(crate) seq: u64,
    pub(crate) created_ms: i64,
    pub(crate) oldest_ms: i64,
    pub(crate) newest_ms: i64,
    pub(crate) pcrc: u32,
}

impl Header {
    /// Total framed length of the record.
    pub(crate) fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.tenant_len) + u64::from(self.payload_len)
    }
}

/// Why a header could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a record start (wrong magic or version, or unknown flags set).
    Framing,
    /// The header checksum does not match.
    Checksum,
}

/// The framed length of a record with this tenant and payload.
pub(crate) fn record_len(tenant_len: usize, payload_len: usize) -> usize {
    HEADER_LEN + tenant_len + payload_len
}

/// Encodes a record with `seq` 0 and no `MORE` flag; [`stamp`] sets both
/// later. With `lz4`, the payload is stored compressed when that saves at
/// least an eighth (else as is: reading it back then costs nothing). The
/// compression and the payload checksum (the expensive parts) run here, in
/// the caller's thread, not on the writer thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    tenant: &str,
    stream: u8,
    items: u32,
    created_ms: i64,
    oldest_ms: i64,
    newest_ms: i64,
    payload: &[u8],
    lz4: bool,
) -> Vec<u8> {
    let tenant_end = HEADER_LEN + tenant.len();
    let mut buf = Vec::new();
    let mut flags = 0;
    if lz4 && payload.len() >= 64 && payload.len() <= MAX_RAW_PAYLOAD {
        let bound = 4 + lz4_flex::block::get_maximum_output_size(payload.len());
        buf.resize(tenant_end + bound, 0);
        buf[tenant_end..tenant_end + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        // The buffer holds the worst case, so this cannot fail; if it did,
        // the payload is stored as is.
        if let Ok(n) = lz4_flex::block::compress_into(payload, &mut buf[tenant_end + 4..])
            && 4 + n <= payload.len() - payload.len() / 8
        {
            buf.truncate(tenant_end + 4 + n);
            // The worst-case room is no longer needed: do not carry it to
            // the writer thread.
            buf.shrink_to_fit();
            flags = FLAG_LZ4;
        }
    }
    if flags == 0 {
        buf.clear();
        buf.reserve_exact(record_len(tenant.len(), payload.len()));
        buf.resize(tenant_end, 0);
        buf.extend_from_slice(payload);
    }
    let stored_len = buf.len() - tenant_end;
    let pcrc = crc32c::crc32c(&buf[tenant_end..]);
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[OFF_FLAGS] = flags;
    h[6] = stream;
    // The caller checked both lengths (AppendError::TooLarge).
    h[8..10].copy_from_slice(&(tenant.len() as u16).to_le_bytes());
    h[12..16].copy_from_slice(&items.to_le_bytes());
    h[16..20].copy_from_slice(&(stored_len as u32).to_le_bytes());
    h[28..36].copy_from_slice(&created_ms.to_le_bytes());
    h[36..44].copy_from_slice(&oldest_ms.to_le_bytes());
    h[44..52].copy_from_slice(&newest_ms.to_le_bytes());
    h[OFF_PCRC..OFF_HCRC].copy_from_slice(&pcrc.to_le_bytes());
    buf[..HEADER_LEN].copy_from_slice(&h);
    buf[HEADER_LEN..tenant_end].copy_from_slice(tenant.as_bytes());
    buf
}

/// The length of a stored payload once decoded (its stored length unless
/// `LZ4`); `None` if an `LZ4` payload is too short to hold its length or
/// claims more than [`MAX_RAW_PAYLOAD`].
pub(crate) fn raw_len(flags: u8, stored: &[u8]) -> Option<usize> {
    if flags & FLAG_LZ4 == 0 {
        return Some(stored.len());
    }
    let n = u32_at(stored.get(..4)?, 0) as usize;
    (n <= MAX_RAW_PAYLOAD).then_some(n)
}

/// Decodes a verified record's stored payload: `Ok(None)` when it is
/// stored as is (use the stored bytes), the original bytes when `LZ4`;
/// `Err` when an `LZ4` block does not decode to its stated length.
pub(crate) fn decode_payload(flags: u8, stored: &[u8]) -> Result<Option<Vec<u8>>, RecordError> {
    if flags & FLAG_LZ4 == 0 {
        return Ok(None);
    }
    let n = raw_len(flags, stored).ok_or(RecordError::Payload)?;
    let mut out = vec![0u8; n];
    match lz4_flex::block::decompress_into(&stored[4..], &mut out) {
        Ok(written) if written == n => Ok(Some(out)),
        _ => Err(RecordError::Payload),
    }
}

/// Sets the generation (modulo [`GENERATION_MODULUS`]) in a record from
/// [`encode`], before [`stamp`] computes `hcrc`.
pub(crate) fn set_generation(record: &mut [u8], generation: u32) {
    let g = (generation % GENERATION_MODULUS).to_le_bytes();
    record[7] = g[0];
    record[10] = g[1];
    record[11] = g[2];
}

/// Sets `seq` and the `MORE` flag (`more`: `FLAG_MORE` or 0) in an encoded
/// record and recomputes `hcrc`; the other flags (how the payload is
/// stored) are kept. `record` must come from [`encode`] (or be a verified
/// record read back).
pub(crate) fn stamp(record: &mut [u8], seq: u64, more: u8) {
    record[OFF_FLAGS] = (record[OFF_FLAGS] & !FLAG_MORE) | (more & FLAG_MORE);
    record[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    let tenant_len = usize::from(u16::from_le_bytes([record[8], record[9]]));
    let hcrc = header_crc(
        &record[..OFF_HCRC],
        &record[HEADER_LEN..HEADER_LEN + tenant_len],
    );
    record[OFF_HCRC..HEADER_LEN].copy_from_slice(&hcrc.to_le_bytes());
}

fn header_crc(fixed: &[u8], tenant: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(fixed), tenant)
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the fixed header without checking `hcrc` (the tenant is needed
/// for that: see [`check_header`]). `fixed` must be `HEADER_LEN` bytes.
pub(crate) fn decode_header(fixed: &[u8]) -> Result<Header, HeaderError> {
    if fixed.len() < HEADER_LEN
        || fixed[0..4] != MAGIC
        || fixed[4] != VERSION
        || fixed[OFF_FLAGS] & !KNOWN_FLAGS != 0
    {
        return Err(HeaderError::Framing);
    }
    Ok(Header {
        flags: fixed[OFF_FLAGS],
        stream: fixed[6],
        generation: u32::from_le_bytes([fixed[7], fixed[10], fixed[11], 0]),
        tenant_len: u16_at(fixed, 8),
        items: u32_at(fixed, 12),
        payload_len: u32_at(fixed, 16),
        seq: u64_at(fixed, OFF_SEQ),
        created_ms: u64_at(fixed, 28) as i64,
        oldest_ms: u64_at(fixed, 36) as i64,
        newest_ms: u64_at(fixed, 44) as i64,
        pcrc: u32_at(fixed, OFF_PCRC),
    })
}

/// Checks `hcrc` over the fixed header and the tenant bytes.
pub(crate) fn check_header(fixed: &[u8], tenant: &[u8]) -> Result<(), HeaderError> {
    if header_crc(&fixed[..OFF_HCRC], tenant) == u32_at(fixed, OFF_HCRC) {
        Ok(())
    } else {
        Err(HeaderError::Checksum)
    }
}

/// A fully verified record, as bytes: header, tenant and payload checked.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) header: Header,
}

/// Why a whole record failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    Header(HeaderError),
    /// The buffer is shorter than the header says.
    Short,
    /// The tenant is not UTF-8.
    Tenant,
    /// The payload checksum does not match.
    Payload,
}

/// Verifies a whole record held in `buf` (exactly one record, or more bytes
/// after it, which are ignored).
pub(crate) fn verify(buf: &[u8]) -> Result<Verified, RecordError> {
    if buf.len() < HEADER_LEN {
        return Err(RecordError::Short);
    }
    let header = decode_header(&buf[..HEADER_LEN]).map_err(RecordError::Header)?;
    let tenant_end = HEADER_LEN + usize::from(header.tenant_len);
    let end = tenant_end + header.payload_len as usize;
    if buf.len() < end {
        return Err(RecordError::Short);
    }
    check_header(&buf[..HEADER_LEN], &buf[HEADER_LEN..tenant_end]).map_err(RecordError::Header)?;
    if std::str::from_utf8(&buf[HEADER_LEN..tenant_end]).is_err() {
        return Err(RecordError::Tenant);
    }
    if crc32c::crc32c(&buf[tenant_end..end]) != header.pcrc {
        return Err(RecordError::Payload);
    }
    Ok(Verified { header })
}

/// Length of one ack-file entry: `seq` (u64 LE) then CRC32C of those 8
/// bytes. Entries are read back self-synchronising ([`decode_acks`]).
pub(crate) const ACK_ENTRY_LEN: usize = 12;

/// Encodes one ack-file entry.
pub(crate) fn encode_ack(seq: u64, out: &mut Vec<u8>) {
    let bytes = seq.to_le_bytes();
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
}

/// Decodes an ack file, self-synchronising: at each position, 12 bytes
/// whose checksum holds are an entry; anything else (a write cut short by a
/// full disk or a kill, with whole entries appended after it) is skipped a
/// byte at a time until entries line up again, so one short write never
/// hides the entries after it. A false match needs 32 checksum bits to hold
/// by chance. Returns the seqs, the number of skipped runs, and where the
/// last whole entry ends (a shorter file keeps a torn tail).
pub(crate) fn decode_acks(buf: &[u8]) -> (Vec<u64>, usize, usize) {
    let mut seqs = Vec::with_capacity(buf.len() / ACK_ENTRY_LEN);
    let (mut at, mut bad, mut end) = (0, 0, 0);
    let mut in_garbage = false;
    while at < buf.len() {
        let entry = buf.get(at..at + ACK_ENTRY_LEN);
        match entry {
            Some(e) if crc32c::crc32c(&e[..8]) == u32_at(e, 8) => {
                seqs.push(u64_at(e, 0));
                at += ACK_ENTRY_LEN;
                end = at;
                in_garbage = false;
            }
            _ => {
                if !in_garbage {
                    bad += 1;
                    in_garbage = true;
                }
                at += 1;
            }
        }
    }
    (seqs, bad, end)
}
