//! examples/protoc: an app whose build runs `protoc` (see build.rs).
//!
//! - `GET /` answers with the protoc version it was built with and the size
//!   of the compiled descriptors;
//! - `GET /protoc` runs `protoc --version` now, in the instance.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

const BUILT_WITH: &str = include_str!(concat!(env!("OUT_DIR"), "/protoc_version.txt"));
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.bin"));

fn answer(path: &str) -> (u16, String) {
    match path {
        "/protoc" => match std::process::Command::new("protoc")
            .arg("--version")
            .output()
        {
            Ok(output) => (
                200,
                String::from_utf8_lossy(&output.stdout).trim().to_string(),
            ),
            Err(err) => (500, format!("cannot run protoc: {err}")),
        },
        _ => (
            200,
            format!(
                "built with {BUILT_WITH}; {} bytes of descriptors",
                DESCRIPTORS.len()
            ),
        ),
    }
}

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind 127.0.0.1:$PORT");
    println!("protoc-app listening on {port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(clone);
        let mut request = String::new();
        let _ = reader.read_line(&mut request);
        let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
        // The rest of the head, so closing does not reset the connection.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
            line.clear();
        }
        let (status, body) = answer(&path);
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
