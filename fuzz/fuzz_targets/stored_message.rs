//! Fuzz target `stored_message`: see [`mq_broker::fuzz::check_stored_message`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_stored_message(data));
