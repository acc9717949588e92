//! The Rust service of README.md ("A service and a client in Rust"), as
//! written there (tests/build.rs copies it out).

include!(concat!(env!("OUT_DIR"), "/rust-service.rs"));
