//! Separate "hosts" on one machine for the multi-host tests: Linux network
//! namespaces on a bridge, processes started inside them, a TCP forwarder that
//! publishes the root namespace's PostgreSQL (which listens on 127.0.0.1 only)
//! inside the `db` namespace, and a tiny HTTP/1.1 client.
//!
//! Topology (`<t>` = `mh<pid>`, the test process id, so concurrent and stale
//! runs never collide; subnet 10.A.B.0/24 derived from the pid):
//!
//! ```text
//!   root ns:  bridge <t>br 10.A.B.1 ── veth <t><node> ──┐ (one per node)
//!   ns <t>-db     10.A.B.2   PostgreSQL forwarder (listener in this ns → 127.0.0.1:5432 of root)
//!   ns <t>-s3     10.A.B.3   s3s-fs
//!   ns <t>-w1     10.A.B.4   mlx-hub worker
//!   ns <t>-w2     10.A.B.5   mlx-hub worker
//!   ns <t>-serve  10.A.B.6   mlx-hub serve --no-worker
//! ```
//!
//! A node's link is cut by taking the bridge end of its veth down (a pulled
//! cable: no RST, packets just vanish), and restored by bringing it up.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prefix of every namespace and interface a run creates.
const PREFIX: &str = "mh";

/// Why namespaces can't be used here (not root, no `ip netns`), if so.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`ip` (iproute2) is not runnable: {e}")),
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The pid a name of ours was made for (`mh<pid>…`), if it is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    // ours end in `br`, `-<node>` or `<node>`: never bare digits
    if digits.is_empty() || tail.is_empty() {
        return None;
    }
    digits.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and links left by runs whose process is gone.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = owner_pid(name)
            && !alive(pid)
            && ip(&["netns", "del", name]).is_ok()
        {
            removed.push(format!("netns {name}"));
        }
    }
    for line in ip_output(&["-o", "link", "show"]).lines() {
        // "12: mh123br: <…" or "13: mh123w1@if2: <…"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if let Some(pid) = owner_pid(name)
            && !alive(pid)
            && ip(&["link", "del", name]).is_ok()
        {
            removed.push(format!("link {name}"));
        }
    }
    removed
}

/// One "host": a namespace joined to the bridge by a veth pair.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub ns: String,
    /// The veth end in the root namespace, on the bridge (cut here).
    pub host_if: String,
    pub addr: Ipv4Addr,
}

/// The bridge and its namespaces; all removed on drop.
#[derive(Debug)]
pub struct Net {
    pub tag: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub nodes: Vec<Node>,
}

impl Net {
    /// Makes the bridge and one namespace per name (addresses .2, .3, … in
    /// order). Names are short (≤ 5 chars) to keep interface names ≤ 15.
    pub fn create(names: &[&str]) -> Result<Net, String> {
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        let (a, b) = (100 + ((pid >> 8) % 100) as u8, (pid & 0xff) as u8);
        let gateway = Ipv4Addr::new(10, a, b, 1);
        let mut net = Net {
            bridge: format!("{tag}br"),
            tag: tag.clone(),
            gateway,
            nodes: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for (i, name) in names.iter().enumerate() {
            assert!(name.len() <= 5, "node name {name} too long");
            let node = Node {
                name: name.to_string(),
                ns: format!("{tag}-{name}"),
                host_if: format!("{tag}{name}"),
                addr: Ipv4Addr::new(10, a, b, 2 + i as u8),
            };
            let peer = format!("{tag}{name}p");
            ip(&["netns", "add", &node.ns])?;
            net.nodes.push(node.clone());
            ip(&[
                "link",
                "add",
                &node.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])?;
            ip(&["link", "set", &node.host_if, "master", &net.bridge])?;
            ip(&["link", "set", &node.host_if, "up"])?;
            ip(&["link", "set", &peer, "netns", &node.ns])?;
            ip(&[
                "-n",
                &node.ns,
                "addr",
                "add",
                &format!("{}/24", node.addr),
                "dev",
                &peer,
            ])?;
            ip(&["-n", &node.ns, "link", "set", &peer, "up"])?;
            ip(&["-n", &node.ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.node(name).addr
    }

    /// `program` to be run inside `node`'s namespace.
    pub fn command(&self, node: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node(node).ns]).arg(program);
        c
    }

    /// Takes `node`'s link up or down (its bridge end).
    pub fn set_link(&self, node: &str, up: bool) {
        let n = self.node(node);
        ip(&["link", "set", &n.host_if, if up { "up" } else { "down" }]).unwrap();
    }

    /// A printable description of the topology.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "bridge {} {}/24 (root namespace)\n",
            self.bridge, self.gateway
        );
        for n in &self.nodes {
            s += &format!(
                "  netns {:<14} {:<12} veth {} <-> bridge\n",
                n.ns, n.addr, n.host_if
            );
        }
        s
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // deleting a namespace deletes its veth end, and with it the pair
        for n in &self.nodes {
            let _ = ip(&["netns", "del", &n.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A process started inside a namespace, stdout+stderr to a log file;
/// killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            log,
            child: Some(child),
        }
    }

    /// The log, without ANSI colour codes.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // CSI: ESC [ params final-byte
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The last `n` lines of the log (for failure messages).
    pub fn tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{} exited ({status}):\n{}", self.name, self.tail(40));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something accepts TCP connections at `addr` (from the root ns).
pub fn wait_tcp(addr: SocketAddr, timeout: Duration, proc: &mut Proc) {
    wait_for(
        &format!("{} listening on {addr}", proc.name),
        timeout,
        || {
            proc.assert_running();
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        },
    )
}

/// Forwards TCP from a listener inside a namespace to an address of the root
/// namespace: the socket is bound on a short-lived thread that joined the
/// namespace (`setns` changes only the calling thread); the copying runs on a
/// tokio runtime whose threads stay in the root namespace. Stopped on drop.
pub struct Forwarder {
    pub listen: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Forwarder {
    pub fn start(ns: &str, listen: SocketAddrV4, target: SocketAddr) -> Forwarder {
        let ns_path = format!("/run/netns/{ns}");
        let listener = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
            let f = File::open(&ns_path)?;
            // SAFETY: a valid namespace fd; affects this thread only, which
            // ends right after binding.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let l = std::net::TcpListener::bind(listen)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .expect("setns thread")
        .unwrap_or_else(|e| panic!("listening on {listen} in {ns}: {e}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder {
            listen: SocketAddr::V4(listen),
            rt: Some(rt),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request (`Connection: close`), with an optional bearer token.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head += &format!("Authorization: Bearer {t}\r\n");
    }
    let (ctype, bytes) = body.unwrap_or(("application/json", &[]));
    if body.is_some() {
        head += &format!("Content-Type: {ctype}\r\n");
    }
    head += &format!("Content-Length: {}\r\n\r\n", bytes.len());
    s.write_all(head.as_bytes())?;
    s.write_all(bytes)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut body = raw[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok(Response { status, body })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&raw[..eol]);
        let size =
            usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
    out
}
