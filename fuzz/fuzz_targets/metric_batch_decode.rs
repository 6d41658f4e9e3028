#![no_main]
// Arbitrary bytes as a MetricBatch payload: decode + domain conversion never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sentra_core::fuzzing::metric_batch_decode(data);
});
