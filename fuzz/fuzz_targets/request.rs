//! `tether::proto::request::parse` on any line: never panics, and whatever it accepts is
//! well-formed (keys and values pass the validators, numbers are in range).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::limits::{KEY_MAX, TTL_MAX_SECS, VALUE_MAX};
use tether::proto::request::{parse, valid_key, valid_value, Request};

fuzz_target!(|line: &[u8]| {
    match parse(line) {
        Ok(Request::Set { key, value, ttl }) => {
            assert!(valid_key(key) && key.len() <= KEY_MAX);
            assert!(valid_value(value) && value.len() <= VALUE_MAX);
            assert!(ttl.is_none_or(|t| (1..=TTL_MAX_SECS).contains(&t)));
            assert!(Request::Set { key, value, ttl }.mutates());
        }
        Ok(Request::Get(k)) | Ok(Request::Del(k)) => assert!(valid_key(k)),
        Ok(Request::Auth(Some(t))) => assert!(!t.is_empty()),
        Ok(_) => {}
        Err(e) => assert!(!e.code.as_str().is_empty() && !e.text.is_empty()),
    }
});
