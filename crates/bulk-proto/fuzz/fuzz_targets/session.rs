#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bulk_proto::fuzzing::session(data));
