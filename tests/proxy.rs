//! `deploy/nginx.conf`, the README's example for TLS through a reverse proxy, run for real: nginx with
//! that file (its upstream ports, listen ports and certificate swapped for this test's, each swap checked
//! to apply exactly once, so the test follows the file) in front of the chat binary. Two Python clients chat
//! over wss:// through it, the chat page served over https chats in two Chromium tabs (connecting to
//! wss://<its host>/), `/api/health` answers over https, `/metrics` and `/api/stats` do not (403), and
//! plain http is redirected to https.
//! Skipped, saying so, when `nginx` or `openssl` is not installed (`tests/run` installs nginx).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_client, scratch_dir, spawn_app, write_file};

/// A free loopback port (bound and released: the proxy binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces `from` in `text`, which must hold it exactly once.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nginx.conf should hold {from:?} once"
    );
    text.replacen(from, to, 1)
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx, from where Debian puts it (outside a non-root user's PATH) or from the PATH.
fn nginx() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn a_chat_through_the_example_nginx_config_works_over_tls() {
    if !installed(nginx()) || !installed("openssl") {
        eprintln!("nginx or openssl is not installed: the proxy example is not exercised (tests/run installs nginx)");
        return;
    }
    let app = spawn_app(&[]);
    let dir = scratch_dir("nginx");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let (http_port, https_port) = (free_port(), free_port());
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"))
            .unwrap();
    let mut site = swap(&example, "127.0.0.1:8080", &app.http_addr.to_string());
    site = swap(&site, "127.0.0.1:9090", &app.ws_addr.to_string());
    site = swap(
        &site,
        "listen 80;",
        &format!("listen 127.0.0.1:{http_port};"),
    );
    site = swap(
        &site,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{https_port} ssl;"),
    );
    site = swap(
        &site,
        "/etc/ssl/certs/chat.example.com.pem",
        cert.to_str().unwrap(),
    );
    site = swap(
        &site,
        "/etc/ssl/private/chat.example.com.key",
        key.to_str().unwrap(),
    );
    let site = write_file(&dir, "site.conf", &site);
    let d = dir.display();
    let main = format!(
        "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         include {};\n}}\n",
        site.display()
    );
    let main = write_file(&dir, "nginx.conf", &main);
    let _nginx = Nginx(
        Command::new(nginx())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&main)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx"),
    );
    let https: SocketAddr = format!("127.0.0.1:{https_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(https).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let url = format!("wss://127.0.0.1:{https_port}/");
    let (status, output) = run_client(
        "python3",
        &["tests/clients/tls_chat.py", &url],
        Duration::from_secs(30),
    );
    assert!(status.is_some_and(|s| s.success()), "{output}");

    // The page itself, served over https: it must connect to wss://<its host>/ and chat in two tabs.
    std::env::set_var("IGNORE_CERTIFICATE_ERRORS", "1");
    let page = format!("https://127.0.0.1:{https_port}");
    let screenshot = common::target_dir().join("two_tabs_tls.png");
    let screenshot = screenshot.to_str().unwrap();
    let (status, output) = run_client(
        "node",
        &["tests/clients/two_tabs.mjs", &page, screenshot],
        Duration::from_secs(120),
    );
    assert!(status.is_some_and(|s| s.success()), "{output}");

    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-s", "-S", "-k", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let health = curl(&[&format!("https://127.0.0.1:{https_port}/api/health")]);
    assert_eq!(health, r#"{"ok":true,"service":"websocket-chat"}"#);
    for private in ["/metrics", "/api/stats"] {
        let status = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://127.0.0.1:{https_port}{private}"),
        ]);
        assert_eq!(status, "403", "{private} is not for the internet");
    }
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("http://127.0.0.1:{http_port}/"),
    ]);
    assert!(redirect.starts_with("301 https://127.0.0.1/"), "{redirect}");
}
