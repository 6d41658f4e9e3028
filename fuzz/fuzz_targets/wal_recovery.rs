//! Recovery from arbitrary bytes never panics: the input is split into a cursor file and
//! segment files (see `sentra_wal::fuzz_recovery`), the log is opened, read completely and
//! appended to.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sentra_wal::fuzz_recovery(data);
});
