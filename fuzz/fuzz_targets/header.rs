//! Fuzz target `header`: see [`mq_broker::fuzz::check_header`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_header(data));
