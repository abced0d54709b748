//! cargo fuzz run request_path: see cyan_proxy::fuzz for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cyan_proxy::fuzz::request_path(data);
});
