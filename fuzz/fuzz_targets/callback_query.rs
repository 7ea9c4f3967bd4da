//! The OAuth callback's query string and its pure checks: no domain outside
//! the known Datadog sites is ever accepted. See
//! `ddrelay::dev::fuzzing::callback_query`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ddrelay::dev::fuzzing::callback_query(data));
