//! The router's request handling: any bytes a client sends get an answer
//! (or a closed connection), never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = berth_router::fuzz::answer(data);
});
