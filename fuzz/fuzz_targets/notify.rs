#![no_main]
// See h5pay_worker::fuzz_targets::notify for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| h5pay_worker::fuzz_targets::notify(data));
