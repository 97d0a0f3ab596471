//! Real HBase for the tests: `HBase` is a handle on a server's Thrift2
//! gateway plus HBase's own Java client (the `dev/hbase` helper) to create
//! tables and scan them back; `HBaseServer` is a standalone HBase of a
//! test's own (master, region server and ZooKeeper in one JVM, plus the
//! Thrift2 gateway), for tests that kill and restart one. Same jars and
//! settings as `dev/services up hbase`; free ports; data kept across
//! `kill`/`restart`; killed on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{DevServices, free_port, wait_for_port};

/// Visible cells of a row: "family:qualifier" → (timestamp, value).
pub type HBaseCells = BTreeMap<Vec<u8>, (i64, Vec<u8>)>;

/// JDK 17 needs these opens for HBase's netty and reflection.
const JAVA_OPTS: [&str; 11] = [
    "--add-opens",
    "java.base/java.lang=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.nio=ALL-UNNAMED",
    "--add-opens",
    "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.reflect=ALL-UNNAMED",
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
];

#[derive(Debug, Clone)]
pub struct HBase {
    thrift: String,
    conf: PathBuf,
    classpath: String,
}

impl HBase {
    pub(crate) fn new(thrift: String, conf: PathBuf, classpath: String) -> HBase {
        HBase {
            thrift,
            conf,
            classpath,
        }
    }

    /// `host:port` of the Thrift2 gateway.
    pub fn address(&self) -> String {
        self.thrift.clone()
    }

    fn java(&self, args: &[&str]) -> String {
        let out = Command::new("java")
            .args(JAVA_OPTS)
            .arg("-cp")
            .arg(format!("{}:{}", self.conf.display(), self.classpath))
            .arg("tributary.TributaryHBase")
            .args(args)
            .output()
            .expect("java (installed by `dev/services up hbase`)");
        assert!(
            out.status.success(),
            "TributaryHBase {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates the missing tables, each with one column family.
    pub fn create_tables(&self, tables: &[(&str, &str)]) {
        let mut args = vec!["create"];
        for (t, f) in tables {
            args.extend([*t, *f]);
        }
        self.java(&args);
    }

    /// Every row's visible cells, read by HBase's own client.
    pub fn rows(&self, table: &str) -> BTreeMap<Vec<u8>, HBaseCells> {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        self.java(&["scan", table])
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let cells = v["cells"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let ts = c[1].as_i64().unwrap();
                        (
                            hex(c[0].as_str().unwrap()),
                            (ts, hex(c[2].as_str().unwrap())),
                        )
                    })
                    .collect();
                (hex(v["row"].as_str().unwrap()), cells)
            })
            .collect()
    }
}

impl DevServices {
    /// The shared dev HBase (`dev/services up hbase`).
    pub fn try_hbase(&self) -> Result<HBase, String> {
        let thrift = self.var("hbase", "TRIBUTARY_HBASE_THRIFT")?.to_string();
        self.reachable("hbase", &thrift)?;
        let conf = PathBuf::from(self.var("hbase", "TRIBUTARY_HBASE_CONF")?);
        let classpath = self.var("hbase", "TRIBUTARY_HBASE_CLASSPATH")?.to_string();
        Ok(HBase::new(thrift, conf, classpath))
    }

    pub fn hbase(&self) -> HBase {
        self.try_hbase().unwrap_or_else(|e| panic!("{e}"))
    }
}

pub struct HBaseServer {
    dir: PathBuf,
    handle: HBase,
    rs_port: u16,
    thrift_port: u16,
    master: Option<Child>,
    thrift: Option<Child>,
}

impl HBaseServer {
    /// Starts a standalone HBase with its state in `dir` (created) and the
    /// given tables (table, column family), plus `tributary_checkpoints`.
    pub fn start(dir: &Path, tables: &[(&str, &str)]) -> HBaseServer {
        let shared = DevServices::load().hbase();
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let (zk, master, rs, thrift) = (free_port(), free_port(), free_port(), free_port());
        let d = dir.display();
        let site = format!(
            r#"<?xml version="1.0"?>
<configuration>
  <property><name>hbase.cluster.distributed</name><value>false</value></property>
  <property><name>hbase.rootdir</name><value>file://{d}/root</value></property>
  <property><name>hbase.tmp.dir</name><value>{d}/tmp</value></property>
  <property><name>hbase.zookeeper.property.dataDir</name><value>{d}/zk</value></property>
  <property><name>hbase.zookeeper.quorum</name><value>127.0.0.1</value></property>
  <property><name>hbase.zookeeper.property.clientPort</name><value>{zk}</value></property>
  <property><name>hbase.zookeeper.property.clientPortAddress</name><value>127.0.0.1</value></property>
  <property><name>hbase.master.port</name><value>{master}</value></property>
  <property><name>hbase.master.info.port</name><value>-1</value></property>
  <property><name>hbase.regionserver.port</name><value>{rs}</value></property>
  <property><name>hbase.regionserver.info.port</name><value>-1</value></property>
  <property><name>hbase.master.hostname</name><value>127.0.0.1</value></property>
  <property><name>hbase.regionserver.hostname</name><value>127.0.0.1</value></property>
  <property><name>hbase.master.ipc.address</name><value>127.0.0.1</value></property>
  <property><name>hbase.regionserver.ipc.address</name><value>127.0.0.1</value></property>
  <property><name>hbase.unsafe.stream.capability.enforce</name><value>false</value></property>
</configuration>"#
        );
        std::fs::write(conf.join("hbase-site.xml"), site).unwrap();
        std::fs::copy(
            shared.conf.join("log4j.properties"),
            conf.join("log4j.properties"),
        )
        .unwrap();
        let mut server = HBaseServer {
            dir: dir.to_path_buf(),
            handle: HBase::new(format!("127.0.0.1:{thrift}"), conf, shared.classpath),
            rs_port: rs,
            thrift_port: thrift,
            master: None,
            thrift: None,
        };
        server.restart();
        let mut all = vec![("tributary_checkpoints", "cf")];
        all.extend_from_slice(tables);
        server.handle.create_tables(&all);
        server
    }

    pub fn handle(&self) -> &HBase {
        &self.handle
    }

    pub fn address(&self) -> String {
        self.handle.address()
    }

    fn spawn(&self, log: &str, args: &[String]) -> Child {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        Command::new("java")
            .args(JAVA_OPTS)
            .arg("-cp")
            .arg(format!(
                "{}:{}",
                self.handle.conf.display(),
                self.handle.classpath
            ))
            .args(args)
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .expect("java (installed by `dev/services up hbase`)")
    }

    /// Kills the master and the gateway (SIGKILL): connections are refused
    /// until `restart`.
    pub fn kill(&mut self) {
        for mut c in [self.thrift.take(), self.master.take()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts HBase and its gateway again on the same ports and data;
    /// returns once both accept connections (deadline 120 s).
    pub fn restart(&mut self) {
        self.kill();
        let master = [
            "-Xmx512m",
            "org.apache.hadoop.hbase.master.HMaster",
            "start",
        ];
        self.master = Some(self.spawn("master.log", &master.map(String::from)));
        wait_for_port(self.rs_port, &format!("HBase in {}", self.dir.display()));
        let thrift = [
            "-Xmx256m".to_string(),
            "org.apache.hadoop.hbase.thrift2.ThriftServer".into(),
            "-b".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.thrift_port.to_string(),
            "--infoport".into(),
            "-1".into(),
            "start".into(),
        ];
        self.thrift = Some(self.spawn("thrift.log", &thrift));
        wait_for_port(
            self.thrift_port,
            &format!("HBase's gateway in {}", self.dir.display()),
        );
    }
}

impl Drop for HBaseServer {
    fn drop(&mut self) {
        self.kill();
    }
}
