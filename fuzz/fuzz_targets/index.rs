//! Fuzz target `index`: see [`mq_broker::fuzz::check_index`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_index(data));
