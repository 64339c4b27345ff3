//! Fuzz target `checkpoint`: see [`mq_broker::fuzz::check_checkpoint`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_checkpoint(data));
