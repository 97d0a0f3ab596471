//! An Apache Kafka broker of a test's own (single-node KRaft, the jars
//! `dev/services up apache_kafka` assembled), for tests that kill and
//! restart a broker without disturbing the shared one. Free ports picked at
//! start; storage formatted once and kept across `kill`/`restart`; killed
//! on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{DevServices, free_port, wait_for_port};

pub struct KafkaBroker {
    dir: PathBuf,
    port: u16,
    libs: String,
    log4j: String,
    child: Option<Child>,
}

impl KafkaBroker {
    /// Formats storage in `dir` (created) and starts the broker.
    pub fn start(dir: &Path) -> KafkaBroker {
        let services = DevServices::load();
        let (libs, log4j) = services
            .try_apache_kafka_install()
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir).unwrap();
        let (port, controller) = (free_port(), free_port());
        let d = dir.display();
        let properties = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\nlog.dirs={d}/data\nnum.partitions=1\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n"
        );
        std::fs::write(dir.join("server.properties"), properties).unwrap();
        let mut broker = KafkaBroker {
            dir: dir.to_path_buf(),
            port,
            libs,
            log4j,
            child: None,
        };
        let format = broker
            .java()
            .args(["kafka.tools.StorageTool", "format", "--standalone", "-c"])
            .arg(dir.join("server.properties"))
            .args(["-t", "MkU3OEVBNTcwNTJENDM2Qk"]) // any base64 UUID
            .output()
            .unwrap();
        assert!(
            format.status.success(),
            "formatting Kafka storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        broker.restart();
        broker
    }

    fn java(&self) -> Command {
        let mut c = Command::new("java");
        c.arg("-Xmx512m")
            .arg(format!("-Dlog4j2.configurationFile={}", self.log4j))
            .arg("-cp")
            .arg(format!("{}/*", self.libs));
        c
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL): connections are refused until `restart`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same ports and data; returns once its
    /// port accepts connections (deadline 120 s).
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("kafka.log")).unwrap();
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .expect("java (installed by `dev/services up apache_kafka`)");
        self.child = Some(child);
        wait_for_port(
            self.port,
            &format!("the Kafka broker in {}", self.dir.display()),
        );
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
