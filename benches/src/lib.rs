//! Benchmarks live beside this file, one per file.
