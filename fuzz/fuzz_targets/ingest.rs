//! Ingest decoders and validators: byte 0 picks the data kind and the
//! content encoding, the rest is the body. See `ddrelay::dev::fuzzing::ingest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddrelay::dev::fuzzing::ingest(data));
