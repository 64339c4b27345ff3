//! Fuzz target `fastjson`: see [`mq_broker::fuzz::check_fastjson`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_fastjson(data));
