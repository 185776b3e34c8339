//! The upload unpacker: whatever a client uploads, nothing is written
//! outside the destination, the limits hold, and nothing panics. Most
//! inputs are tar bytes compressed here (so the fuzzer explores the tar
//! format); one in eight is handed over as it is (the zstd frame itself).
#![no_main]

use berth_build::UnpackLimits;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let upload = if selector % 8 == 0 {
        rest.to_vec()
    } else {
        match zstd::encode_all(rest, 1) {
            Ok(compressed) => compressed,
            Err(_) => return,
        }
    };
    let root = tempfile::tempdir().expect("a temp dir");
    let dest = root.path().join("dest");
    std::fs::create_dir(&dest).expect("the destination");
    let limits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 256,
    };
    if let Ok(bytes) = berth_build::unpack(upload.as_slice(), &dest, limits) {
        assert!(bytes <= limits.max_bytes, "{bytes} bytes unpacked");
    }
    let beside: Vec<_> = std::fs::read_dir(root.path())
        .expect("the temp dir")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(beside, ["dest"], "the upload wrote outside its folder");
});
