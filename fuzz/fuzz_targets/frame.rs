//! Fuzz target `frame`: see [`mq_broker::fuzz::check_frame`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_frame(data));
