//! examples/plain: a web app with no dependencies at all (std only), so it
//! builds in about a second. It serves one connection at a time:
//!
//! - `GET /` answers with a greeting and its berth instance id;
//! - `GET /whoami` answers with its user id;
//! - `GET /read?path=P` answers with the file at P, or 403 and the error;
//! - `GET /alloc?mb=N` allocates and touches N MiB, then answers;
//! - `GET /fetch?addr=HOST:PORT&path=/P` fetches `http://HOST:PORT/P`, through
//!   `http_proxy` when it is set (as HTTP clients do) unless `&direct=1`
//!   (as clients that ignore proxy settings do), and answers with the
//!   response it got.
//!
//! Run as `plain fetch HOST:PORT /P`, it fetches that URL directly, prints
//! the response, and exits 0 when it was a 200 (for jobs and workers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// A plain-HTTP GET, through the proxy in `http_proxy` when there is one
/// and `direct` is false.
fn fetch(addr: &str, path: &str, direct: bool) -> Result<String, String> {
    let proxy = std::env::var("http_proxy").ok().filter(|_| !direct);
    let (connect_to, target) = match &proxy {
        Some(proxy) => (
            proxy.trim_start_matches("http://").trim_end_matches('/').to_string(),
            format!("http://{addr}{path}"),
        ),
        None => (addr.to_string(), path.to_string()),
    };
    let mut stream = TcpStream::connect(&connect_to).map_err(|err| format!("connect {connect_to}: {err}"))?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|err| err.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|err| err.to_string())?;
    Ok(response)
}

fn query<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default()
}

fn answer(target: &str, instance: &str) -> (u16, String) {
    let path = target.split('?').next().unwrap_or("/");
    match path {
        "/whoami" => (200, uid()),
        "/sleep" => {
            let ms: u64 = query(target, "ms").and_then(|ms| ms.parse().ok()).unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            (200, format!("slept {ms} ms"))
        }
        "/read" => match query(target, "path").map(std::fs::read_to_string) {
            Some(Ok(text)) => (200, text),
            Some(Err(err)) => (403, err.to_string()),
            None => (400, "give ?path=".into()),
        },
        "/alloc" => {
            let mb: usize = query(target, "mb").and_then(|mb| mb.parse().ok()).unwrap_or(1);
            let mut block = vec![0u8; mb * 1024 * 1024];
            // Touch every page so the memory is really used.
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            (200, format!("allocated {} MiB", block.len() / (1024 * 1024)))
        }
        "/fetch" => match (query(target, "addr"), query(target, "path")) {
            (Some(addr), path) => match fetch(addr, path.unwrap_or("/"), query(target, "direct") == Some("1")) {
                Ok(response) => (200, response),
                Err(err) => (502, err),
            },
            _ => (400, "give ?addr=HOST:PORT&path=/P".into()),
        },
        _ => (200, format!("plain says hi from {instance}\n")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("fetch") {
        let addr = args.get(2).map_or("127.0.0.1:80", String::as_str);
        let path = args.get(3).map_or("/", String::as_str);
        match fetch(addr, path, true) {
            Ok(response) => {
                println!("{response}");
                std::process::exit(if response.starts_with("HTTP/1.1 200") { 0 } else { 1 });
            }
            Err(err) => {
                eprintln!("{err}");
                std::process::exit(1);
            }
        }
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind 127.0.0.1:$PORT");
    println!("level=info msg=\"plain is listening\" port={port}");
    let instance = std::env::var("BERTH_INSTANCE").unwrap_or_default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // A thread per connection, so a slow answer (`/sleep`) holds up no
        // other; inline when no thread can start (a pids limit).
        let copy = instance.clone();
        let spare = stream.try_clone();
        if std::thread::Builder::new().spawn(move || serve(stream, &copy)).is_err() {
            if let Ok(stream) = spare {
                serve(stream, &instance);
            }
        }
    }
}

fn serve(mut stream: std::net::TcpStream, instance: &str) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(clone) => clone,
        Err(_) => return,
    });
    let mut line = String::new();
    let mut target = String::from("/");
    let mut first = true;
    let mut forwarded_for = String::new();
    // Read the request head; the body (if any) is ignored.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if first {
                    target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    first = false;
                } else if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("x-forwarded-for") {
                        forwarded_for = value.trim().to_string();
                    }
                }
            }
        }
    }
    let (status, body) = if target == "/forwarded-for" {
        (200, forwarded_for)
    } else {
        answer(&target, instance)
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}
