//! Arbitrary bytes as the replies of a WireGuard `WG_CMD_GET_DEVICE` dump: parsing and
//! coalescing give a device or an error, never a panic (see `sentra_wg::proto::fuzz_dump`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sentra_wg::proto::fuzz_dump(data);
});
