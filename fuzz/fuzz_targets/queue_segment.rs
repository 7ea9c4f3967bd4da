//! Arbitrary bytes as a queue segment file: recovery never panics, never
//! hands out a record whose checksums do not match, and is idempotent. See
//! `ddrelay::dev::fuzzing::queue_segment`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddrelay::dev::fuzzing::queue_segment(data));
