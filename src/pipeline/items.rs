//! A take's items as ranges of shared buffers: the table the plan
//! (`plan.rs`) builds and the packer (`batch.rs`, through [`Items`]) reads.
//!
//! An item is 12 bytes here: the index of its buffer and its byte range in
//! it. The buffers are the records' payloads (one shared reference per
//! record, not per item) and the items made anew (trimmed past the window,
//! or rebuilt from a ready record's payload), each its own buffer. A light
//! series item is about 60 bytes, so the shared reference per item this
//! replaces (32 bytes, with an atomic increment and decrement each) added
//! half the item's size again (BENCHMARKS.md "Change 24: a take's items as
//! ranges of its records (2026-12-08)").

use std::ops::Range;

use bytes::Bytes;

use super::batch::Items;

/// An item: `buffer[start..end]`, or the whole buffer when `start` is
/// [`WHOLE`] (a buffer of any size, where offsets would not fit in 32
/// bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    buffer: u32,
    start: u32,
    end: u32,
}

const WHOLE: u32 = u32::MAX;

/// A placeholder: an item that does not exist (yet); it reads as empty.
const NONE: Span = Span {
    buffer: u32::MAX,
    start: WHOLE,
    end: 0,
};

/// A take's items, in order.
#[derive(Debug, Default)]
pub(crate) struct ItemTable {
    buffers: Vec<Bytes>,
    spans: Vec<Span>,
}

/// Where a record's items are ranges of, once added ([`ItemTable::source`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source {
    buffer: u32,
    /// Its ranges fit in 32 bits (else each item becomes its own buffer).
    ranged: bool,
}

impl ItemTable {
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Adds `buffer` for items that are ranges of it ([`ItemTable::push_range`]).
    pub(crate) fn source(&mut self, buffer: Bytes) -> Source {
        let ranged = u32::try_from(buffer.len()).is_ok_and(|n| n < WHOLE);
        self.buffers.push(buffer);
        Source {
            buffer: (self.buffers.len() - 1) as u32,
            ranged,
        }
    }

    /// Adds `source[r]` as the next item.
    pub(crate) fn push_range(&mut self, source: Source, r: Range<usize>) {
        if source.ranged {
            self.spans.push(Span {
                buffer: source.buffer,
                start: r.start as u32,
                end: r.end as u32,
            });
        } else {
            let item = self.buffers[source.buffer as usize].slice(r);
            self.push(item);
        }
    }

    /// Adds `item`, made anew, as the next item.
    pub(crate) fn push(&mut self, item: Bytes) {
        let span = self.own(item);
        self.spans.push(span);
    }

    /// Makes item `i` `item`, placeholders before it included.
    pub(crate) fn set(&mut self, i: usize, item: Bytes) {
        if self.spans.len() <= i {
            self.spans.resize(i + 1, NONE);
        }
        self.spans[i] = self.own(item);
    }

    fn own(&mut self, item: Bytes) -> Span {
        self.buffers.push(item);
        Span {
            buffer: (self.buffers.len() - 1) as u32,
            start: WHOLE,
            end: 0,
        }
    }

    /// Item `i`; empty for a placeholder.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let s = self.spans[i];
        match self.buffers.get(s.buffer as usize) {
            None => &[],
            Some(b) if s.start == WHOLE => b,
            Some(b) => &b[s.start as usize..s.end as usize],
        }
    }

    /// Items `r`, as far as they exist (the table may end before `r` does).
    pub(crate) fn slice(&self, r: Range<usize>) -> Vec<&[u8]> {
        let end = r.end.min(self.len());
        (r.start.min(end)..end).map(|i| self.get(i)).collect()
    }

    /// Items `r` as a list of their own, indexed from 0.
    pub(crate) fn view(&self, r: Range<usize>) -> View<'_> {
        View { table: self, r }
    }
}

/// A run of a table's items, indexed from its start.
pub(crate) struct View<'a> {
    table: &'a ItemTable,
    r: Range<usize>,
}

impl Items for View<'_> {
    fn count(&self) -> usize {
        self.r.len()
    }
    fn item(&self, i: usize) -> &[u8] {
        self.table.get(self.r.start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_pushed_whatever_their_buffer() {
        let mut t = ItemTable::default();
        let rec = t.source(Bytes::from_static(b"alpha\nbeta"));
        t.push_range(rec, 0..5);
        t.push(Bytes::from_static(b"rewritten"));
        t.push_range(rec, 6..10);
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(0), b"alpha");
        assert_eq!(t.get(1), b"rewritten");
        assert_eq!(t.get(2), b"beta");
        let v = t.view(1..3);
        assert_eq!(
            (v.count(), v.item(0), v.item(1)),
            (2, &b"rewritten"[..], &b"beta"[..])
        );
    }

    #[test]
    fn placeholders_read_empty_until_set_and_slices_stop_at_the_end() {
        let mut t = ItemTable::default();
        let rec = t.source(Bytes::from_static(b"a"));
        t.push_range(rec, 0..1);
        // Items 1 and 2 do not exist yet: a slice past the end is clamped.
        assert_eq!(t.slice(0..3), vec![&b"a"[..]]);
        t.set(2, Bytes::from_static(b"c"));
        assert_eq!(t.slice(0..3), vec![&b"a"[..], &b""[..], &b"c"[..]]);
        t.set(1, Bytes::from_static(b"b"));
        assert_eq!(t.slice(1..3), vec![&b"b"[..], &b"c"[..]]);
        assert_eq!(t.slice(5..9), Vec::<&[u8]>::new());
    }

    #[test]
    fn a_buffer_too_large_for_ranges_gives_each_item_its_own() {
        let mut t = ItemTable::default();
        let mut rec = t.source(Bytes::from_static(b"xy"));
        // As a buffer of 4 GiB or more would be marked (not allocated here).
        rec.ranged = false;
        t.push_range(rec, 1..2);
        assert_eq!(t.get(0), b"y");
        assert_eq!(t.buffers.len(), 2, "the item became its own buffer");
    }
}
