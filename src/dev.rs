//! The development tools: everything here exists to rehearse, demonstrate,
//! measure or test the relay, and none of it runs in production.
//!
//! - [`fakedog`]: the Datadog emulator (every site over TLS, OAuth, API
//!   keys, intakes, faults) behind `ddrelay fakedog` and every test.
//! - [`tls`]: the run-time CA and HTTPS server loop fakedog serves with
//!   (the relay never serves TLS; it checks certificates in `datadog.rs`).
//! - [`sandbox`]: a relay wired to fakedog on loopback, as the demo, the
//!   benchmark and the integration tests start it.
//! - [`demo`]: `ddrelay demo`, the tour.
//! - [`bench`](mod@bench): `ddrelay bench`, the whole-path benchmark
//!   (`dev/bench/loads.rs`: the loads matrix).
//! - [`fuzzing`]: the properties the fuzz targets in `fuzz/` check; its
//!   tests replay the checked-in corpus.
//!
//! The rule: a tool may use any part of the product, and the product uses
//! none of this. Only the binary's front (`cli.rs`: `ddrelay fakedog`,
//! `demo`, `bench`) names `dev`; `tests/layout.rs` fails on any other
//! product file under `src/` that does. The module is hidden from the
//! library's documentation.

pub mod bench;
pub mod demo;
pub mod fakedog;
pub mod fuzzing;
pub mod sandbox;
pub mod tls;
