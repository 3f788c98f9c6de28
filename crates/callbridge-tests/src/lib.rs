//! Tests that run several callbridge services (and the simulator) together, in one
//! workspace crate, so that no service crate dev-depends on a sibling service: the CLI
//! against a real ingress, persister, submitter and simulator (`tests/cli_*`), the
//! submitter against the simulator and the whole pipeline (`tests/submitter_*`), and
//! the ingress's hostile input stored by a real persister (`tests/ingress_*`).
//!
//! The library is empty; the tests are under `tests/`. Helpers a service crate's own
//! tests use as well are included from that crate (`#[path]`), not copied; the
//! binaries come from `callbridge_testkit::binary`.
