//! Compiles proto/hello.proto with `protoc`, as prost-build does: the build
//! fails when `protoc` is missing.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto/hello.proto");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into());
    let version = Command::new(&protoc)
        .arg("--version")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {protoc}: {err}"));
    assert!(version.status.success(), "{protoc} --version failed");
    let descriptors = format!("{out}/hello.bin");
    let status = Command::new(&protoc)
        .args([
            "--proto_path=proto",
            "--descriptor_set_out",
            &descriptors,
            "hello.proto",
        ])
        .status()
        .expect("protoc");
    assert!(status.success(), "protoc could not compile hello.proto");
    std::fs::write(
        format!("{out}/protoc_version.txt"),
        String::from_utf8_lossy(&version.stdout).trim(),
    )
    .expect("write the version");
}
