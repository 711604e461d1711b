//! Criterion benchmarks for HyperMesh live in `benches/`; this library is
//! empty on purpose (cargo needs a target to hang the benches on).
//!
//! `cargo bench -p hm-benches` runs them all; figures and the machine they
//! were measured on are in the workspace's `BENCHMARKS.md`.
