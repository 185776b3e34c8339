//! The converted formats: render.yaml, app.json, Procfile, Kubernetes
//! manifests. Any text is read or refused, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let outcome = match selector % 4 {
        0 => berth_spec::parse_render("render.yaml", text, Some("web")).map(|_| ()),
        1 => berth_spec::parse_app_json("app.json", text).map(|_| ()),
        2 => berth_spec::parse_procfile("Procfile", text).map(|_| ()),
        _ => berth_spec::parse_manifests("deploy.yaml", text, Some("web")).map(|_| ()),
    };
    if let Err(err) = outcome {
        let _ = err.to_string();
    }
});
