//! The wire codec on arbitrary bytes: see `tether_core::fuzz::decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tether_core::fuzz::decode(data));
