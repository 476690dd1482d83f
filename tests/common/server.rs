//! The real binary on a real socket: start `serve` on a data directory, a minimal
//! HTTP/1.1 client, keys from the command line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{layers_dir, riskmap, text};

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `riskmap serve` on `dir` (port 0) with the repository's layers and `extra`
/// arguments; returns once it reports its address.
pub fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riskmap"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.to_str().unwrap(),
        "--layers",
        layers_dir().to_str().unwrap(),
    ])
    .args(extra)
    .env("RISKMAP_LOG", "info")
    .stderr(Stdio::piped());
    start_command(cmd)
}

/// Starts a `serve` command made by the caller (stderr piped); returns once it reports
/// its address.
pub fn start_command(mut cmd: Command) -> Server {
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let rest = &line[i + "listening on http://".len()..];
                let _ = tx.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the server reports its address");
    Server { child, addr }
}

/// A minimal HTTP/1.1 client: status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    http_bytes(addr, method, path, headers, body.as_bytes())
}

/// A new key with `role`, from `riskmap keys add`.
pub fn cli_key(dir: &Path, role: &str) -> String {
    let o = riskmap(&[
        "keys",
        "add",
        "--role",
        role,
        "--name",
        role,
        "--data",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout).trim().to_string()
}

/// [`http`] with a body of bytes.
pub fn http_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413, 415) before reading the whole body.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
