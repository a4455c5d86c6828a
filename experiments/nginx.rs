//! A real nginx for the proxy experiment: started as a child process from a generated
//! configuration in a temporary prefix, one process (`master_process off`), listening on
//! loopback only, stopped and its prefix removed when dropped — and bound to die with this
//! process if it is killed first.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    prefix: PathBuf,
}

/// Where nginx is: on the `PATH`, or where Debian puts it (outside a non-root `PATH`).
fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

impl Nginx {
    /// Starts nginx with `server` as the body of its one `server { }` block (the `listen`
    /// directive is added), and waits until it accepts connections.
    pub fn start(server: &str) -> Result<Nginx, String> {
        let exe = find().ok_or(
            "nginx is not installed: `apt-get install nginx-light` (the experiment starts its own, on loopback)",
        )?;
        let addr = free_port()?;
        let prefix = std::env::temp_dir().join(format!("c10k-nginx-{}", std::process::id()));
        std::fs::create_dir_all(prefix.join("tmp"))
            .map_err(|e| format!("cannot create {}: {e}", prefix.display()))?;
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, config(&prefix, addr, server))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::sys::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let mut nginx = Nginx {
            addr,
            child,
            prefix,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log =
                    std::fs::read_to_string(nginx.prefix.join("error.log")).unwrap_or_default();
                return Err(format!(
                    "nginx exited ({status}) before listening: {}",
                    log.lines().last().unwrap_or("no log")
                ));
            }
            if Instant::now() > deadline {
                return Err("nginx did not listen within 10 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// `nginx -v`'s answer, for the results.
    pub fn version() -> String {
        find()
            .and_then(|exe| Command::new(exe).arg("-v").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// A port nobody listens on now (the OS's pick, released for nginx to bind).
fn free_port() -> Result<SocketAddr, String> {
    let probe = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    probe.local_addr().map_err(|e| format!("no free port: {e}"))
}

fn config(prefix: &Path, addr: SocketAddr, server: &str) -> String {
    let p = prefix.display();
    format!(
        "daemon off;\nmaster_process off;\nerror_log {p}/error.log warn;\npid {p}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n  \
         fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n  \
         server {{\n    listen {addr};\n{server}\n  }}\n}}\n"
    )
}
