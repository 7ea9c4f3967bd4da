//! Ingest decoders and validators: byte 0 picks the data kind and the
//! content encoding, the rest is the body. See `ddrelay::fuzzing::ingest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddrelay::fuzzing::ingest(data));
