#![no_main]
// Arbitrary bytes as a SignedBatch: parse + verify + decode never panic, and nothing
// verifies without the key (the harness asserts it).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sentra_core::fuzzing::envelope_verify(data);
});
