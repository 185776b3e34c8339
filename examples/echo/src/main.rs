//! A TCP echo server beside an HTTP one, std only: the app of a fly.toml
//! with an HTTP service and TCP services.
//!
//! - `PORT` (default 8080): HTTP; every request gets `echo http`.
//! - `ECHO_PORT` (default 7000): each line comes back as `INSTANCE: LINE`.
//! - `PROXY_ECHO_PORT` (default 7001): the same after a PROXY protocol v2
//!   header, whose client address is the first line sent back
//!   (`from IP:PORT`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};

fn main() {
    let port = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let instance = std::env::var("BERTH_INSTANCE").unwrap_or_default();
    let echo = TcpListener::bind(format!("127.0.0.1:{}", port("ECHO_PORT", "7000")))
        .expect("bind ECHO_PORT");
    let proxied = TcpListener::bind(format!("127.0.0.1:{}", port("PROXY_ECHO_PORT", "7001")))
        .expect("bind PROXY_ECHO_PORT");
    let http = TcpListener::bind(format!("127.0.0.1:{}", port("PORT", "8080"))).expect("bind PORT");
    println!("echo is listening");
    let copy = instance.clone();
    std::thread::spawn(move || serve(echo, copy, false));
    std::thread::spawn(move || serve(proxied, instance, true));
    for stream in http.incoming().flatten() {
        std::thread::spawn(move || answer_http(stream));
    }
}

fn serve(listener: TcpListener, instance: String, proxy_protocol: bool) {
    for stream in listener.incoming().flatten() {
        let instance = instance.clone();
        std::thread::spawn(move || {
            let _ = echo_lines(stream, &instance, proxy_protocol);
        });
    }
}

fn echo_lines(mut stream: TcpStream, instance: &str, proxy_protocol: bool) -> std::io::Result<()> {
    if proxy_protocol {
        let from = read_proxy_header(&mut stream)?;
        writeln!(stream, "from {from}")?;
    }
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        write!(stream, "{instance}: {line}")?;
        line.clear();
    }
    Ok(())
}

/// Reads a PROXY protocol v2 header; returns the client's IPv4 address and port.
fn read_proxy_header(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed)?;
    if &fixed[..12] != b"\r\n\r\n\0\r\nQUIT\n" {
        return Err(std::io::Error::other("no PROXY v2 signature"));
    }
    let length = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let mut addresses = vec![0u8; length];
    stream.read_exact(&mut addresses)?;
    if fixed[13] != 0x11 || length < 12 {
        return Ok("unknown".into());
    }
    let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
    let port = u16::from_be_bytes([addresses[8], addresses[9]]);
    Ok(format!("{ip}:{port}"))
}

fn answer_http(mut stream: TcpStream) {
    let mut buffer = [0u8; 4096];
    let _ = stream.read(&mut buffer);
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\necho http");
}
