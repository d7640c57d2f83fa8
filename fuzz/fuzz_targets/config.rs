//! The TOML configuration parser on arbitrary text: an error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = overlay::config::parse("fuzz.toml", text);
    }
});
