//! The trace API's bodies: byte 0 picks v0.3 JSON, v0.4 or v0.5
//! MessagePack, or v0.6 stats; the rest is the body. See
//! `ddrelay::dev::fuzzing::traces`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddrelay::dev::fuzzing::traces(data));
