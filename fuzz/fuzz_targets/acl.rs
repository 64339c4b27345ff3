//! Fuzz target `acl`: see [`mq_broker::fuzz::check_acl`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mq_broker::fuzz::check_acl(data));
