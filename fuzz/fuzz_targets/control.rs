//! Control-socket command lines (our syntax and VNET/P's) on arbitrary text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cmd) = overlay::control::parse_command(text) {
            // What we print must parse back to the same command.
            let again = overlay::control::parse_command(&cmd.to_string());
            assert_eq!(again.ok(), Some(cmd));
        }
    }
});
