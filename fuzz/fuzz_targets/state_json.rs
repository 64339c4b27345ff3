//! Fuzz target `state_json`: see [`mq_broker::fuzz::check_state_json`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_state_json(data));
