//! cargo fuzz run fast_vs_hyper: see cyan_proxy::differential.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cyan_proxy::differential::fast_vs_hyper(data);
});
