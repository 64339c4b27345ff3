//! Fuzz target `timer_store`: see [`mq_broker::fuzz::check_timer_store`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_timer_store(data));
