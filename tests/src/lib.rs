//! Helpers shared by the black-box tests and the benchmark harness.
