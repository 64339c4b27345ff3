//! Fuzz target `batch`: see [`mq_broker::fuzz::check_batch`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_batch(data));
