//! Test helpers shared by every crate's tests.
//!
//! Tests never mock the servers: they read the endpoints `dev/services up`
//! wrote to `$TRIBUTARY_DEV_DIR/services.env` (default
//! `<repo>/target/dev-services/services.env`). A test whose server is missing
//! or unreachable fails — it never skips — with the command that starts it.

mod binlogs;
mod clickhouse_server;
mod fault_proxy;
mod hbase_server;
mod kafka_broker;
pub mod kv_workload;

pub use binlogs::purge_binlogs;
pub use clickhouse_server::ClickHouseServer;
pub use fault_proxy::FaultProxy;
pub use hbase_server::{HBase, HBaseCells, HBaseServer};
pub use kafka_broker::KafkaBroker;

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Where `dev/services` keeps its state and the env file.
pub fn dev_dir() -> PathBuf {
    match std::env::var_os("TRIBUTARY_DEV_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("target/dev-services"),
    }
}

/// A name no other test (or earlier run) uses: `prefix_<pid>_<time>_<n>`,
/// valid as a database, table, topic or bucket name (lower case, digits, `_`).
/// A port nobody listens on now (for servers of a test's own).
/// A free port for a server a test starts, from 20000–31999: below the
/// kernel's ephemeral range (32768+), so that while a slow server (a JVM)
/// starts, no other test's `bind(0)` — a port picked, released and then
/// bound by another process — lands on it. A collision there once made an
/// HBase test talk Thrift to another test's HTTP server.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000
            + (pid
                .wrapping_mul(7_919)
                .wrapping_add(n.wrapping_mul(104_729))
                % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until `what` accepts connections on `port` (deadline 120 s).
pub(crate) fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not open port {port} in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!(
        "{prefix}_{}_{t}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug, Clone)]
pub struct MariaDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `mysql://user@host:port` (no password in the dev setup).
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct ClickHouse {
    /// HTTP endpoints, one per shard server.
    pub urls: Vec<String>,
    /// Name of the two-shard cluster in `system.clusters`.
    pub cluster: String,
}

/// One table version's rows as Iceberg Java printed them.
pub type JavaRows = Vec<serde_json::Map<String, serde_json::Value>>;

#[derive(Debug, Clone)]
pub struct S3 {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3 {
    /// Catalog properties (pyiceberg/Iceberg Java names) for a warehouse here.
    pub fn catalog_properties(&self, warehouse: &str) -> HashMap<String, String> {
        HashMap::from([
            ("warehouse".to_string(), warehouse.to_string()),
            ("s3.endpoint".to_string(), self.endpoint.clone()),
            ("s3.region".to_string(), self.region.clone()),
            ("s3.access-key-id".to_string(), self.access_key_id.clone()),
            (
                "s3.secret-access-key".to_string(),
                self.secret_access_key.clone(),
            ),
            ("s3.path-style-access".to_string(), "true".to_string()),
        ])
    }

    /// A client for the dev S3 (path-style, signed with the dev keys).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "dev",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates a bucket with a fresh name and returns the name.
    pub async fn new_bucket(&self) -> String {
        let bucket = unique_name("bucket").replace('_', "-");
        self.client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
        bucket
    }
}

/// The endpoints of the running dev services.
#[derive(Debug, Clone)]
pub struct DevServices {
    vars: HashMap<String, String>,
    source: PathBuf,
}

impl DevServices {
    /// Reads the env file; panics with the fix if it is missing.
    pub fn load() -> DevServices {
        Self::from_file(&dev_dir().join("services.env")).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn from_file(path: &Path) -> Result<DevServices, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read {} ({e}): the dev services are not set up; run `dev/services up`",
                path.display()
            )
        })?;
        let vars = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(DevServices {
            vars,
            source: path.to_path_buf(),
        })
    }

    fn var(&self, service: &str, key: &str) -> Result<&str, String> {
        self.vars.get(key).map(String::as_str).ok_or_else(|| {
            format!(
                "{service} is not up ({key} missing from {}); start it with `dev/services up {service}`",
                self.source.display()
            )
        })
    }

    fn reachable(&self, service: &str, addr: &str) -> Result<(), String> {
        let unreachable = |why: String| {
            format!(
                "{service} is not reachable at {addr} ({why}); start it with `dev/services up {service}`"
            )
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address".into()))?;
        TcpStream::connect_timeout(&sock, Duration::from_secs(3))
            .map(drop)
            .map_err(|e| unreachable(e.to_string()))
    }

    pub fn try_mariadb(&self) -> Result<MariaDb, String> {
        let host = self.var("mariadb", "TRIBUTARY_MARIADB_HOST")?.to_string();
        let port: u16 = self
            .var("mariadb", "TRIBUTARY_MARIADB_PORT")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        self.reachable("mariadb", &format!("{host}:{port}"))?;
        Ok(MariaDb {
            user: self.var("mariadb", "TRIBUTARY_MARIADB_USER")?.to_string(),
            url: self.var("mariadb", "TRIBUTARY_MARIADB_URL")?.to_string(),
            host,
            port,
        })
    }

    pub fn try_clickhouse(&self) -> Result<ClickHouse, String> {
        let urls: Vec<String> = self
            .var("clickhouse", "TRIBUTARY_CLICKHOUSE_URLS")?
            .split(',')
            .map(str::to_string)
            .collect();
        for u in &urls {
            self.reachable("clickhouse", u.trim_start_matches("http://"))?;
        }
        let cluster = self
            .var("clickhouse", "TRIBUTARY_CLICKHOUSE_CLUSTER")?
            .to_string();
        Ok(ClickHouse { urls, cluster })
    }

    /// Bootstrap servers of the Kafka-protocol broker.
    pub fn try_kafka(&self) -> Result<String, String> {
        let brokers = self.var("kafka", "TRIBUTARY_KAFKA_BROKERS")?.to_string();
        self.reachable("kafka", &brokers)?;
        Ok(brokers)
    }

    /// Bootstrap servers of the Apache Kafka broker (KRaft).
    pub fn try_apache_kafka(&self) -> Result<String, String> {
        let brokers = self
            .var("apache_kafka", "TRIBUTARY_APACHE_KAFKA_BROKERS")?
            .to_string();
        self.reachable("apache_kafka", &brokers)?;
        Ok(brokers)
    }

    /// The Apache Kafka jars directory and Log4j 2 config, for brokers of a
    /// test's own.
    pub fn try_apache_kafka_install(&self) -> Result<(String, String), String> {
        let libs = self.var("apache_kafka", "TRIBUTARY_APACHE_KAFKA_LIBS")?;
        let log4j = self.var("apache_kafka", "TRIBUTARY_APACHE_KAFKA_LOG4J")?;
        Ok((libs.to_string(), log4j.to_string()))
    }

    /// `host:port` of the Hive Metastore thrift endpoint.
    pub fn try_hms(&self) -> Result<String, String> {
        let addr = self.var("hms", "TRIBUTARY_HMS_ADDR")?.to_string();
        self.reachable("hms", &addr)?;
        Ok(addr)
    }

    pub fn try_s3(&self) -> Result<S3, String> {
        let endpoint = self.var("s3", "TRIBUTARY_S3_ENDPOINT")?.to_string();
        self.reachable("s3", endpoint.trim_start_matches("http://"))?;
        Ok(S3 {
            endpoint,
            region: self.var("s3", "TRIBUTARY_S3_REGION")?.to_string(),
            access_key_id: self.var("s3", "TRIBUTARY_S3_ACCESS_KEY_ID")?.to_string(),
            secret_access_key: self
                .var("s3", "TRIBUTARY_S3_SECRET_ACCESS_KEY")?
                .to_string(),
        })
    }

    /// The venv's Python, with pyiceberg for independent reads.
    pub fn try_python(&self) -> Result<PathBuf, String> {
        let py = PathBuf::from(self.var("pyiceberg", "TRIBUTARY_PYTHON")?);
        if !py.exists() {
            return Err(format!(
                "{} does not exist; run `dev/services up pyiceberg`",
                py.display()
            ));
        }
        Ok(py)
    }

    pub fn mariadb(&self) -> MariaDb {
        self.try_mariadb().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn clickhouse(&self) -> ClickHouse {
        self.try_clickhouse().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn kafka(&self) -> String {
        self.try_kafka().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn apache_kafka(&self) -> String {
        self.try_apache_kafka().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn hms(&self) -> String {
        self.try_hms().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn s3(&self) -> S3 {
        self.try_s3().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn python(&self) -> PathBuf {
        self.try_python().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Iceberg Java's read (the reference implementation, deletes applied)
    /// of each table version in `metadata_files`, in one JVM: per file, its
    /// rows as JSON objects keyed by column name (long and decimal values
    /// as strings). Local files, and s3:// on the dev S3 (moto).
    pub fn iceberg_java_read(&self, metadata_files: &[&str]) -> Vec<JavaRows> {
        let s3 = metadata_files.iter().any(|f| f.starts_with("s3"));
        let versions = self.iceberg_java(metadata_files, s3);
        assert_eq!(versions.len(), metadata_files.len(), "one line per version");
        versions
    }

    /// The same for tables loaded through Iceberg Java's HiveCatalog from
    /// the dev metastore (`db.table` names).
    pub fn iceberg_java_read_from_hive(&self, tables: &[&str]) -> Vec<JavaRows> {
        let uri = format!("thrift://{}", self.hms());
        let mut args = vec!["--hive", uri.as_str()];
        args.extend_from_slice(tables);
        let versions = self.iceberg_java(&args, false);
        assert_eq!(versions.len(), tables.len(), "one line per table");
        versions
    }

    fn iceberg_java(&self, args: &[&str], s3: bool) -> Vec<JavaRows> {
        let classpath = self
            .var("iceberg_java", "TRIBUTARY_ICEBERG_JAVA_CLASSPATH")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut java = Command::new("java");
        java.args(["-XX:TieredStopAtLevel=1", "-Xmx1g", "-cp", classpath]);
        if s3 {
            let s3 = self.s3();
            for (k, v) in [
                ("s3.endpoint", s3.endpoint.as_str()),
                ("s3.path-style-access", "true"),
                ("s3.access-key-id", &s3.access_key_id),
                ("s3.secret-access-key", &s3.secret_access_key),
                ("client.region", &s3.region),
            ] {
                java.arg(format!("-Diceberg.{k}={v}"));
            }
        }
        let out = java
            .arg("tributary.IcebergRead")
            .args(args)
            .output()
            .expect("start java");
        assert!(
            out.status.success(),
            "Iceberg Java failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 output");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON array of rows"))
            .collect()
    }

    /// Loads `url` in headless Chromium (`dev/services up chromium`) and
    /// returns the DOM after the page ran (`--dump-dom`); also saves a
    /// screenshot to `screenshot`. Flags as this machine needs them: no
    /// sandbox as root, no background networking (refused here), a fresh
    /// profile (removed after).
    pub fn chromium_render(&self, url: &str, screenshot: &Path) -> String {
        let chromium = self
            .var("chromium", "TRIBUTARY_CHROMIUM")
            .unwrap_or_else(|e| panic!("{e}"));
        let profile = std::env::temp_dir().join(unique_name("chromium-profile"));
        let run = |extra: &[String]| {
            let out = Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,800",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .arg(url)
                .output()
                .expect("start chromium");
            assert!(
                out.status.success(),
                "chromium failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let dom = run(&["--dump-dom".to_string()]);
        run(&[format!("--screenshot={}", screenshot.display())]);
        let _ = std::fs::remove_dir_all(&profile);
        dom
    }

    /// Runs a Python script with the venv's interpreter; returns stdout, or
    /// panics with stderr.
    pub fn run_python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new(self.python())
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("start python");
        assert!(
            out.status.success(),
            "python failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_env(contents: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("{}.env", unique_name("testkit")));
        std::fs::write(&p, contents).unwrap();
        p
    }

    #[test]
    fn missing_env_file_names_the_setup_command() {
        let e = DevServices::from_file(Path::new("/nonexistent/services.env")).unwrap_err();
        assert!(e.contains("run `dev/services up`"), "{e}");
    }

    #[test]
    fn service_not_up_names_its_start_command() {
        let s = DevServices::from_file(&write_env("TRIBUTARY_DEV_DIR=/x\n")).unwrap();
        let e = s.try_kafka().unwrap_err();
        assert!(e.contains("`dev/services up kafka`"), "{e}");
        let e = s.try_s3().unwrap_err();
        assert!(e.contains("`dev/services up s3`"), "{e}");
    }

    #[test]
    fn unreachable_service_names_its_start_command() {
        // Bind then drop a listener: the port is (almost certainly) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = format!(
            "TRIBUTARY_MARIADB_HOST=127.0.0.1\nTRIBUTARY_MARIADB_PORT={port}\nTRIBUTARY_MARIADB_USER=root\nTRIBUTARY_MARIADB_URL=x\n"
        );
        let s = DevServices::from_file(&write_env(&env)).unwrap();
        let e = s.try_mariadb().unwrap_err();
        assert!(
            e.contains("not reachable") && e.contains("`dev/services up mariadb`"),
            "{e}"
        );
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
    }
}
