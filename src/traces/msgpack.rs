//! A MessagePack reader over a byte slice, as lenient as the trace agent's
//! decoder (docs/datadog.md "Traces"): integers of any width and sign where
//! a number is expected, str or bin where a string is, nil for any scalar,
//! unknown map keys skipped. Tracers differ in all of these (dd-trace-js
//! writes fixed-width ids and small integer metrics; libdatadog writes
//! fixed 9-byte integers), so a strict reader would refuse real traffic.

use std::fmt::Display;

use rmp::Marker;

/// Why a body is not the MessagePack expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Malformed(pub String);

/// Nesting the reader follows when it skips a value it does not use.
const MAX_DEPTH: usize = 64;

/// A cursor over MessagePack bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.remaining() < n {
            return Err(Malformed(format!(
                "body ends inside a value (byte {} of {})",
                self.pos,
                self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, Malformed> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn marker(&mut self) -> Result<Marker, Malformed> {
        Ok(Marker::from_u8(self.take(1)?[0]))
    }

    fn peek(&self) -> Option<Marker> {
        self.buf.get(self.pos).map(|b| Marker::from_u8(*b))
    }

    /// Whether the next value is nil (then it is consumed).
    pub(crate) fn nil(&mut self) -> bool {
        if self.peek() == Some(Marker::Null) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// An integer of any width or sign, as the 64 bits the agent keeps
    /// (`parseUint64Bytes`: a negative id is its two's complement); nil is 0.
    pub(crate) fn u64(&mut self, what: impl Display) -> Result<u64, Malformed> {
        Ok(self.int(what)? as u64)
    }

    /// A signed integer; an unsigned one over `i64::MAX` is refused.
    pub(crate) fn i64(&mut self, what: impl Display) -> Result<i64, Malformed> {
        let v = self.int(&what)?;
        i64::try_from(v)
            .map_err(|_| Malformed(format!("{what}: {v} does not fit a signed 64-bit integer")))
    }

    fn int(&mut self, what: impl Display) -> Result<i128, Malformed> {
        let m = self.marker()?;
        Ok(match m {
            Marker::Null => 0,
            Marker::FixPos(v) => i128::from(v),
            Marker::FixNeg(v) => i128::from(v),
            Marker::U8 => i128::from(self.be(1)?),
            Marker::U16 => i128::from(self.be(2)?),
            Marker::U32 => i128::from(self.be(4)?),
            Marker::U64 => i128::from(self.be(8)?),
            Marker::I8 => i128::from(self.be(1)? as u8 as i8),
            Marker::I16 => i128::from(self.be(2)? as u16 as i16),
            Marker::I32 => i128::from(self.be(4)? as u32 as i32),
            Marker::I64 => i128::from(self.be(8)? as i64),
            other => return Err(type_error(what, "an integer", other)),
        })
    }

    /// A number: integer or float (the agent's `parseFloat64Bytes`, plus
    /// float32, which some encoders pick for small values); nil is 0.
    pub(crate) fn f64(&mut self, what: impl Display) -> Result<f64, Malformed> {
        match self.peek() {
            Some(Marker::F64) => {
                self.pos += 1;
                Ok(f64::from_bits(self.be(8)?))
            }
            Some(Marker::F32) => {
                self.pos += 1;
                Ok(f64::from(f32::from_bits(self.be(4)? as u32)))
            }
            _ => Ok(self.int(what)? as f64),
        }
    }

    /// A string, from str or bin; nil is empty; invalid UTF-8 is repaired
    /// as the agent does (U+FFFD).
    pub(crate) fn str(
        &mut self,
        what: impl Display,
    ) -> Result<std::borrow::Cow<'a, str>, Malformed> {
        let raw = self.raw(what, "a string")?;
        // Valid text (almost all of it) is checked by the standard
        // library's fast path and borrowed; only the rest is repaired.
        Ok(match std::str::from_utf8(raw) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(raw),
        })
    }

    /// Raw bytes (bin, or str); nil is empty.
    pub(crate) fn bytes(&mut self, what: impl Display) -> Result<&'a [u8], Malformed> {
        self.raw(what, "bytes")
    }

    /// The bytes of a str or bin value; nil is empty.
    fn raw(&mut self, what: impl Display, expected: &str) -> Result<&'a [u8], Malformed> {
        let len = match self.marker()? {
            Marker::Null => return Ok(&[]),
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 | Marker::Bin8 => self.be(1)? as usize,
            Marker::Str16 | Marker::Bin16 => self.be(2)? as usize,
            Marker::Str32 | Marker::Bin32 => self.be(4)? as usize,
            other => return Err(type_error(what, expected, other)),
        };
        self.take(len)
    }

    /// A boolean; nil is false.
    pub(crate) fn bool(&mut self, what: impl Display) -> Result<bool, Malformed> {
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False | Marker::Null => Ok(false),
            other => Err(type_error(what, "a boolean", other)),
        }
    }

    /// An array header; nil is an empty array. The length is checked
    /// against the bytes left (each element takes at least one), so a
    /// forged header cannot make a caller reserve memory for nothing.
    pub(crate) fn array(&mut self, what: impl Display) -> Result<usize, Malformed> {
        let n = match self.marker()? {
            Marker::Null => 0,
            Marker::FixArray(n) => usize::from(n),
            Marker::Array16 => self.be(2)? as usize,
            Marker::Array32 => self.be(4)? as usize,
            other => return Err(type_error(what, "an array", other)),
        };
        self.bounded(what, n, 1)
    }

    /// A map header (entries); nil is an empty map.
    pub(crate) fn map(&mut self, what: impl Display) -> Result<usize, Malformed> {
        let n = match self.marker()? {
            Marker::Null => 0,
            Marker::FixMap(n) => usize::from(n),
            Marker::Map16 => self.be(2)? as usize,
            Marker::Map32 => self.be(4)? as usize,
            other => return Err(type_error(what, "a map", other)),
        };
        self.bounded(what, n, 2)
    }

    fn bounded(&self, what: impl Display, n: usize, per: usize) -> Result<usize, Malformed> {
        if n.saturating_mul(per) > self.remaining() {
            return Err(Malformed(format!(
                "{what}: claims {n} elements but only {} bytes follow",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// Skips one value of any type.
    pub(crate) fn skip(&mut self) -> Result<(), Malformed> {
        self.skip_at(0)
    }

    fn skip_at(&mut self, depth: usize) -> Result<(), Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed(format!("values nested deeper than {MAX_DEPTH}")));
        }
        let m = self.marker()?;
        let (fixed, nested) = match m {
            Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (self.be(1)? as usize, 0),
            Marker::Str16 | Marker::Bin16 => (self.be(2)? as usize, 0),
            Marker::Str32 | Marker::Bin32 => (self.be(4)? as usize, 0),
            Marker::FixArray(n) => (0, usize::from(n)),
            Marker::Array16 => (0, self.be(2)? as usize),
            Marker::Array32 => (0, self.be(4)? as usize),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (0, 2 * self.be(2)? as usize),
            Marker::Map32 => (0, 2 * self.be(4)? as usize),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (self.be(1)? as usize + 1, 0),
            Marker::Ext16 => (self.be(2)? as usize + 1, 0),
            Marker::Ext32 => (self.be(4)? as usize + 1, 0),
            Marker::Reserved => return Err(Malformed("reserved MessagePack byte 0xc1".into())),
        };
        self.take(fixed)?;
        self.bounded("value", nested, 1)?;
        for _ in 0..nested {
            self.skip_at(depth + 1)?;
        }
        Ok(())
    }
}

fn type_error(what: impl Display, expected: &str, got: Marker) -> Malformed {
    Malformed(format!(
        "{what}: expected {expected}, found MessagePack {got:?}"
    ))
}

/// Small MessagePack writers for what the relay sends (stats) and tests.
pub(crate) mod write {
    /// A string.
    pub(crate) fn str(out: &mut Vec<u8>, s: &str) {
        let _ = rmp::encode::write_str(out, s);
    }

    /// An unsigned integer, in its smallest form.
    pub(crate) fn uint(out: &mut Vec<u8>, v: u64) {
        let _ = rmp::encode::write_uint(out, v);
    }

    /// A signed integer, in its smallest form.
    pub(crate) fn sint(out: &mut Vec<u8>, v: i64) {
        let _ = rmp::encode::write_sint(out, v);
    }

    pub(crate) fn f64(out: &mut Vec<u8>, v: f64) {
        let _ = rmp::encode::write_f64(out, v);
    }

    pub(crate) fn bool(out: &mut Vec<u8>, v: bool) {
        let _ = rmp::encode::write_bool(out, v);
    }

    pub(crate) fn bin(out: &mut Vec<u8>, v: &[u8]) {
        let _ = rmp::encode::write_bin(out, v);
    }

    pub(crate) fn map(out: &mut Vec<u8>, n: u32) {
        let _ = rmp::encode::write_map_len(out, n);
    }

    pub(crate) fn array(out: &mut Vec<u8>, n: u32) {
        let _ = rmp::encode::write_array_len(out, n);
    }

    /// A map key and a string value.
    pub(crate) fn kv_str(out: &mut Vec<u8>, k: &str, v: &str) {
        str(out, k);
        str(out, v);
    }

    /// A map key and an unsigned value.
    pub(crate) fn kv_uint(out: &mut Vec<u8>, k: &str, v: u64) {
        str(out, k);
        uint(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_any_width_and_strings_of_either_kind() {
        let mut b = Vec::new();
        rmp::encode::write_u64(&mut b, 7).unwrap(); // fixed 0xcf
        rmp::encode::write_i64(&mut b, -1).unwrap(); // fixed 0xd3
        rmp::encode::write_uint(&mut b, 300).unwrap();
        b.push(0xc0); // nil
        rmp::encode::write_f32(&mut b, 1.5).unwrap();
        rmp::encode::write_bin(&mut b, b"svc").unwrap();
        rmp::encode::write_map_len(&mut b, 1).unwrap();
        write::kv_str(&mut b, "k", "v");
        let mut r = Reader::new(&b);
        assert_eq!(r.u64("a").unwrap(), 7);
        assert_eq!(
            r.u64("b").unwrap(),
            u64::MAX,
            "a negative id keeps its bits"
        );
        assert_eq!(r.i64("c").unwrap(), 300);
        assert_eq!(r.i64("d").unwrap(), 0, "nil is zero");
        assert_eq!(r.f64("e").unwrap(), 1.5);
        assert_eq!(r.str("f").unwrap(), "svc");
        r.skip().unwrap();
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn forged_lengths_and_wrong_types_are_named() {
        let mut r = Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        let e = r.array("traces").unwrap_err();
        assert!(e.0.contains("traces: claims 4294967295"), "{e}");
        let mut r = Reader::new(&[0xa1, b'x']);
        let e = r.u64("trace 0, span 1: trace_id").unwrap_err();
        assert!(
            e.0.starts_with("trace 0, span 1: trace_id: expected an integer"),
            "{e}"
        );
        let mut deep = vec![0x91; 100];
        deep.push(0xc0);
        assert!(Reader::new(&deep).skip().is_err());
    }
}
