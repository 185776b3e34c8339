//! berth.toml and fly.toml: any text is read or refused with an error that
//! points inside it, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let file = if selector % 2 == 0 {
        "berth.toml"
    } else {
        "fly.toml"
    };
    if let Err(err) = berth_spec::parse_spec(file, text) {
        // The message renders (with its file:line:column).
        let _ = err.to_string();
    }
});
