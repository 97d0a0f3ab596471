//! A ClickHouse server of a test's own, for tests that stop and restart a
//! server (failover) without disturbing the shared dev servers. Same binary
//! and settings as `dev/services`; free ports picked at start; data kept
//! across `stop`/`start`; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub struct ClickHouseServer {
    dir: PathBuf,
    http_port: u16,
    child: Option<Child>,
}

impl ClickHouseServer {
    /// Starts a server with its state in `dir` (created).
    pub fn start(dir: &Path) -> ClickHouseServer {
        std::fs::create_dir_all(dir).unwrap();
        let (http, tcp, interserver) = (free_port(), free_port(), free_port());
        let d = dir.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{interserver}</interserver_http_port>
  <mark_cache_size>67108864</mark_cache_size>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>"#
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>"#;
        std::fs::write(dir.join("config.xml"), config).unwrap();
        std::fs::write(dir.join("users.xml"), users).unwrap();
        let mut server = ClickHouseServer {
            dir: dir.to_path_buf(),
            http_port: http,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills the server (SIGKILL): connections are refused until `restart`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and data; returns once it
    /// answers `/ping` (deadline 60 s).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("server.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server (installed by `dev/services up clickhouse`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = format!("127.0.0.1:{}", self.http_port);
        loop {
            if ping(&addr) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server in {} did not answer in 60 s",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn ping(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /ping HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.ends_with("Ok.\n")
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}
