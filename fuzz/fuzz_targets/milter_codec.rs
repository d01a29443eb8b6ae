#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sealgate_protocol::fuzzing::milter_codec(data));
