//! Fuzz target `consume_queue`: see [`mq_broker::fuzz::check_consume_queue`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_consume_queue(data));
