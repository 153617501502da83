//! The wire codec on arbitrary bytes: see `tether_testkit::fuzz::decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tether_testkit::fuzz::decode(data));
