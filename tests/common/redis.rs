//! Redis, the shared store of replicas sharing budgets (`guard.shared`): started on a free
//! loopback port without persistence, killed and started again on the same port (empty, as
//! after a crash), and asked simple commands over RESP.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::{free_port, peer_bin, poll_until, Proc, TestDir};

pub struct Redis {
    pub port: u16,
    log_dir: std::path::PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl Redis {
    pub fn start(dir: &TestDir) -> Redis {
        let mut r = Redis {
            port: free_port(),
            log_dir: dir.path().to_path_buf(),
            proc: None,
            starts: 0,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Start (again) on the same port, empty.
    pub fn restart(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(peer_bin("redis-server"));
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        let log = self.log_dir.join(format!("redis-{}.log", self.starts));
        self.proc = Some(Proc::spawn("redis-server", cmd, log));
        poll_until(
            "redis-server to answer PING",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || self.cmd(&["PING"]),
        );
    }

    /// SIGKILL: gone at once, with everything it held.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// One command; the reply's first line (`+PONG`, `:42`, `$5`...).
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end().to_string())
    }

    /// An integer reply.
    pub fn int(&self, args: &[&str]) -> i64 {
        let r = self
            .cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"));
        r.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("redis {args:?}: not an integer reply: {r}"))
    }
}
