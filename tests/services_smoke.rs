//! Smoke tests: each dev service works through the crate Tributary uses for it.
//! They need `dev/services up`; a missing server fails the test with the
//! command that starts it.

use std::time::{Duration, Instant};

use tributary_testkit::{DevServices, unique_name};

fn services() -> DevServices {
    DevServices::load()
}

mod mariadb {
    use super::*;
    use futures_util::StreamExt;
    use mysql_async::binlog::events::{EventData, OptionalMetadataField};
    use mysql_async::prelude::*;
    use mysql_async::{BinlogStreamRequest, Conn, Opts};

    #[tokio::test]
    async fn a_binlog_row_event_decodes_with_full_metadata() {
        let db = services().mariadb();
        let opts = Opts::from_url(&db.url).unwrap();
        let mut conn = Conn::new(opts.clone()).await.unwrap();
        let schema = unique_name("smoke");
        conn.query_drop(format!("CREATE DATABASE {schema}"))
            .await
            .unwrap();
        conn.query_drop(format!(
            "CREATE TABLE {schema}.t (id INT UNSIGNED PRIMARY KEY, name VARCHAR(20), amount DECIMAL(10,2))"
        ))
        .await
        .unwrap();
        let (file, pos): (String, u64) = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .map(|row: mysql_async::Row| (row.get(0).unwrap(), row.get(1).unwrap()))
            .expect("binary logging is on");
        conn.query_drop(format!(
            "INSERT INTO {schema}.t VALUES (4294967295, 'señor 🚀', -12.50)"
        ))
        .await
        .unwrap();

        let mut dump = Conn::new(opts).await.unwrap();
        dump.query_drop("SET @mariadb_slave_capability=4")
            .await
            .unwrap();
        let request = BinlogStreamRequest::new(4242)
            .with_filename(file.as_bytes())
            .with_pos(pos);
        let mut stream = dump.get_binlog_stream(request).await.unwrap();
        let row = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = stream.next().await {
                let event = event.unwrap();
                // MariaDB-only event types are unknown to mysql_common: skip them.
                let Ok(Some(EventData::RowsEvent(rows))) = event.read_data() else {
                    continue;
                };
                let tme = stream
                    .get_tme(rows.table_id())
                    .expect("table map precedes rows");
                if tme.database_name() != schema {
                    continue;
                }
                let mut columns: Vec<String> = Vec::new();
                for field in tme.iter_optional_meta() {
                    if let OptionalMetadataField::ColumnName(names) = field.unwrap() {
                        columns = names
                            .iter_names()
                            .map(|n| n.unwrap().name().into_owned())
                            .collect();
                    }
                }
                let (_, after) = rows.rows(tme).next().unwrap().unwrap();
                return (columns, after.expect("insert has an after image"));
            }
            panic!("binlog stream ended before our insert");
        })
        .await
        .expect("insert event within 30 s");
        let (columns, after) = row;
        assert_eq!(
            columns,
            ["id", "name", "amount"],
            "binlog_row_metadata=FULL sends names"
        );
        let value = |i: usize| match after.as_ref(i).unwrap() {
            mysql_async::binlog::value::BinlogValue::Value(v) => v.clone(),
            other => panic!("unexpected {other:?}"),
        };
        // Unsigned maximum decodes as unsigned (needs FULL metadata), not -1.
        let id = value(0);
        assert!(
            matches!(
                id,
                mysql_async::Value::Int(4294967295) | mysql_async::Value::UInt(4294967295)
            ),
            "{id:?}"
        );
        assert_eq!(
            value(1),
            mysql_async::Value::Bytes("señor 🚀".as_bytes().to_vec())
        );
        assert_eq!(value(2), mysql_async::Value::Bytes(b"-12.50".to_vec()));
        conn.query_drop(format!("DROP DATABASE {schema}"))
            .await
            .unwrap();
    }
}

mod clickhouse_cluster {
    use super::*;
    use ::clickhouse::{Client, Row};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Row, Serialize, Deserialize, PartialEq)]
    struct Item {
        id: u64,
        name: String,
    }

    fn client(url: &str) -> Client {
        // 18.16 lacks RowBinaryWithNamesAndTypes: validation must be off.
        Client::default().with_url(url).with_validation(false)
    }

    async fn count(c: &Client, table: &str) -> u64 {
        c.query(&format!("SELECT count() FROM {table}"))
            .fetch_one::<u64>()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn both_shards_and_a_distributed_table_take_inserts() {
        let ch = services().clickhouse();
        assert_eq!(ch.urls.len(), 2);
        let shards: Vec<Client> = ch.urls.iter().map(|u| client(u)).collect();
        let local = unique_name("smoke_local");
        for c in &shards {
            c.query(&format!(
                "CREATE TABLE {local} (id UInt64, name String) ENGINE = MergeTree ORDER BY id"
            ))
            .execute()
            .await
            .unwrap();
        }
        // Direct inserts into each shard's local table.
        for (i, c) in shards.iter().enumerate() {
            let mut insert = c.insert::<Item>(&local).await.unwrap();
            insert
                .write(&Item {
                    id: i as u64,
                    name: format!("direct-{i}"),
                })
                .await
                .unwrap();
            insert.end().await.unwrap();
        }
        // Inserts through the Distributed table spread over both shards.
        let dist = format!("{local}_all");
        let c0 = &shards[0];
        c0.query(&format!(
            "CREATE TABLE {dist} AS {local} ENGINE = Distributed({}, default, {local}, id)",
            ch.cluster
        ))
        .execute()
        .await
        .unwrap();
        let c0_sync = c0.clone().with_setting("insert_distributed_sync", "1");
        let mut insert = c0_sync.insert::<Item>(&dist).await.unwrap();
        for id in 100..200u64 {
            insert
                .write(&Item {
                    id,
                    name: format!("dist-{id}"),
                })
                .await
                .unwrap();
        }
        insert.end().await.unwrap();

        assert_eq!(count(c0, &dist).await, 102);
        let (n0, n1) = (
            count(&shards[0], &local).await,
            count(&shards[1], &local).await,
        );
        assert_eq!(n0 + n1, 102);
        // The sharding key id % 2 sends 50 of 100..200 to each shard.
        assert_eq!((n0, n1), (51, 51));
        let got = shards[1]
            .query(&format!("SELECT ?fields FROM {local} WHERE id = 1"))
            .fetch_all::<Item>()
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![Item {
                id: 1,
                name: "direct-1".into()
            }]
        );
        c0.query(&format!("DROP TABLE {dist}"))
            .execute()
            .await
            .unwrap();
        for c in &shards {
            c.query(&format!("DROP TABLE {local}"))
                .execute()
                .await
                .unwrap();
        }
    }
}

/// The Kafka protocol through rdkafka, on both brokers: tansu (the
/// Kafka-protocol broker the suite has run since its start) and Apache Kafka
/// 4.x (the reference). Broker restarts run against Apache Kafka brokers of
/// the test's own.
mod kafka {
    use super::*;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Message};

    async fn create_topic(config: &ClientConfig, partitions: i32) -> String {
        let topic = unique_name("smoke");
        let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
        let created = admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        assert!(created[0].is_ok(), "{created:?}");
        topic
    }

    async fn delete_topic(config: &ClientConfig, topic: &str) {
        let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
        admin
            .delete_topics(&[topic], &AdminOptions::new())
            .await
            .unwrap();
    }

    fn client(brokers: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        config
    }

    /// The relay's producer settings: Java's partitioner, idempotence.
    fn producer(config: &ClientConfig) -> FutureProducer {
        config
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "0")
            .create()
            .unwrap()
    }

    async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &str) -> i32 {
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        delivery.partition
    }

    fn consumer(config: &ClientConfig, group: &str) -> StreamConsumer {
        config
            .clone()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap()
    }

    /// (key, payload, partition) of the next message, if one comes in 500 ms.
    async fn next(consumer: &StreamConsumer) -> Option<(String, String, i32)> {
        let m = tokio::time::timeout(Duration::from_millis(500), consumer.recv())
            .await
            .ok()?
            .unwrap();
        let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap().to_vec()).unwrap();
        Some((text(m.key()), text(m.payload()), m.partition()))
    }

    async fn keyed_round_trip(brokers: &str) {
        let config = client(brokers);
        let topic = create_topic(&config, 4).await;
        let producer = producer(&config);
        let mut partitions = Vec::new();
        for (key, payload) in [("pk-7", "v1"), ("pk-7", "v2"), ("pk-9", "other")] {
            partitions.push(send(&producer, &topic, key, payload).await);
        }
        assert_eq!(partitions[0], partitions[1], "one key, one partition");
        let consumer = consumer(&config, &unique_name("smoke_group"));
        consumer.subscribe(&[&topic]).unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "only {seen:?} consumed within 60 s"
            );
            seen.extend(next(&consumer).await);
        }
        let pk7: Vec<&str> = seen
            .iter()
            .filter(|m| m.0 == "pk-7")
            .map(|m| m.1.as_str())
            .collect();
        assert_eq!(pk7, ["v1", "v2"], "per-key order survives");
        assert!(seen.iter().all(|m| m.0 != "pk-7" || m.2 == partitions[0]));
        // tansu 0.6 kills its storage task if a topic is deleted while a
        // consumer still fetches from it: close the consumer first.
        drop(consumer);
        delete_topic(&config, &topic).await;
    }

    #[tokio::test]
    async fn keyed_messages_keep_their_partition_and_round_trip() {
        keyed_round_trip(&services().kafka()).await;
    }

    #[tokio::test]
    async fn keyed_messages_keep_their_partition_and_round_trip_on_apache_kafka() {
        keyed_round_trip(&services().apache_kafka()).await;
    }

    /// Two consumers of one group (cooperative-sticky) split 4 partitions
    /// after a rebalance; every key's versions arrive in order, all on one
    /// consumer.
    async fn a_group_rebalances_and_keeps_per_key_order(brokers: &str) {
        let config = client(brokers);
        let topic = create_topic(&config, 4).await;
        let group = unique_name("smoke_rebalance");
        let (a, b) = (consumer(&config, &group), consumer(&config, &group));
        a.subscribe(&[&topic]).unwrap();
        let assigned = |c: &StreamConsumer| c.assignment().map_or(0, |l| l.count());
        let deadline = Instant::now() + Duration::from_secs(60);
        while assigned(&a) < 4 {
            assert!(Instant::now() < deadline, "a never got the 4 partitions");
            let _ = next(&a).await; // polling drives the group protocol
        }
        b.subscribe(&[&topic]).unwrap();
        while assigned(&a) + assigned(&b) != 4 || assigned(&b) == 0 {
            assert!(
                Instant::now() < deadline,
                "no rebalance: a has {}, b has {}",
                assigned(&a),
                assigned(&b)
            );
            let _ = tokio::join!(next(&a), next(&b));
        }
        let producer = producer(&config);
        let keys = 40;
        for version in 0..3 {
            for k in 0..keys {
                send(&producer, &topic, &format!("pk-{k}"), &format!("{version}")).await;
            }
        }
        let mut got: std::collections::BTreeMap<String, Vec<(String, usize)>> = Default::default();
        let mut n = 0;
        while n < keys * 3 {
            assert!(Instant::now() < deadline, "{n} of {} consumed", keys * 3);
            let (ma, mb) = tokio::join!(next(&a), next(&b));
            for (m, who) in [(ma, 0), (mb, 1)] {
                if let Some((key, payload, _)) = m {
                    got.entry(key).or_default().push((payload, who));
                    n += 1;
                }
            }
        }
        for (key, versions) in &got {
            let order: Vec<&str> = versions.iter().map(|v| v.0.as_str()).collect();
            assert_eq!(order, ["0", "1", "2"], "{key} out of order");
            assert!(
                versions.iter().all(|v| v.1 == versions[0].1),
                "{key} on two consumers"
            );
        }
        assert!(got.values().any(|v| v[0].1 == 0) && got.values().any(|v| v[0].1 == 1));
        drop((a, b));
        delete_topic(&config, &topic).await;
    }

    #[tokio::test]
    async fn a_consumer_group_rebalances_and_keeps_per_key_order() {
        a_group_rebalances_and_keeps_per_key_order(&services().kafka()).await;
    }

    #[tokio::test]
    async fn a_consumer_group_rebalances_and_keeps_per_key_order_on_apache_kafka() {
        a_group_rebalances_and_keeps_per_key_order(&services().apache_kafka()).await;
    }

    /// An idempotent producer keeps sending while its broker is SIGKILLed
    /// and restarted: every acknowledged message is there afterwards,
    /// exactly once and in order.
    #[tokio::test]
    async fn an_idempotent_producer_loses_nothing_across_a_broker_sigkill_on_apache_kafka() {
        let dir = tributary_testkit::dev_dir()
            .join("tmp")
            .join(unique_name("kafka_broker"));
        let mut broker = tributary_testkit::KafkaBroker::start(&dir);
        let config = client(&broker.bootstrap_servers());
        let topic = create_topic(&config, 1).await;
        let producer = producer(&config);
        for i in 0..50 {
            send(&producer, &topic, "k", &i.to_string()).await;
        }
        broker.kill();
        // Sends in flight while the broker is down are retried by the
        // producer and acknowledged once it is back.
        let pending: Vec<_> = (50..100)
            .map(|i| {
                let producer = producer.clone();
                let topic = topic.clone();
                tokio::spawn(async move { send(&producer, &topic, "k", &i.to_string()).await })
            })
            .collect();
        broker.restart();
        for p in pending {
            p.await.unwrap();
        }
        let consumer = consumer(&config, &unique_name("smoke_restart"));
        consumer.subscribe(&[&topic]).unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while seen.len() < 100 {
            assert!(Instant::now() < deadline, "{} of 100 consumed", seen.len());
            if let Some((_, payload, _)) = next(&consumer).await {
                seen.push(payload.parse::<u32>().unwrap());
            }
        }
        // A duplicate would show up after the 100th message.
        for _ in 0..4 {
            if let Some((_, payload, _)) = next(&consumer).await {
                seen.push(payload.parse::<u32>().unwrap());
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..100).collect::<Vec<_>>(),
            "nothing lost or duplicated"
        );
        assert_eq!(
            &seen[..50],
            &(0..50).collect::<Vec<_>>()[..],
            "order before the kill"
        );
        drop(consumer);
        drop(broker);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

mod hms {
    use super::*;
    use hive_metastore::{Database, ThriftHiveMetastoreClientBuilder};
    use volo_thrift::MaybeException;

    #[tokio::test]
    async fn a_database_can_be_created_read_and_dropped_over_thrift() {
        let addr: std::net::SocketAddr = services().hms().parse().unwrap();
        // HMS 2.3 speaks plain buffered thrift; the default framed codec fails.
        let client = ThriftHiveMetastoreClientBuilder::new("hms")
            .address(addr)
            .make_codec(volo_thrift::codec::default::DefaultMakeCodec::buffered())
            .build();
        let name = unique_name("smoke_db");
        let db = Database {
            name: Some(name.clone().into()),
            description: Some("tributary smoke test".into()),
            ..Default::default()
        };
        match client.create_database(db).await.unwrap() {
            MaybeException::Ok(()) => {}
            MaybeException::Exception(e) => panic!("create_database: {e:?}"),
        }
        let got = match client.get_database(name.clone().into()).await.unwrap() {
            MaybeException::Ok(d) => d,
            MaybeException::Exception(e) => panic!("get_database: {e:?}"),
        };
        assert_eq!(got.name.as_deref(), Some(name.as_str()));
        assert_eq!(got.description.as_deref(), Some("tributary smoke test"));
        assert!(
            got.location_uri.unwrap().starts_with("file:"),
            "warehouse on the local filesystem"
        );
        // A second create is an AlreadyExistsException, returned as Ok(Exception).
        let again = Database {
            name: Some(name.clone().into()),
            ..Default::default()
        };
        assert!(matches!(
            client.create_database(again).await.unwrap(),
            MaybeException::Exception(_)
        ));
        match client
            .drop_database(name.clone().into(), true, true)
            .await
            .unwrap()
        {
            MaybeException::Ok(()) => {}
            MaybeException::Exception(e) => panic!("drop_database: {e:?}"),
        }
        assert!(matches!(
            client.get_database(name.into()).await.unwrap(),
            MaybeException::Exception(_)
        ));
    }
}

mod s3 {
    use super::*;
    use aws_sdk_s3::config::{Credentials, Region};
    use aws_sdk_s3::primitives::ByteStream;

    #[tokio::test]
    async fn put_get_and_conditional_put_against_moto() {
        let s3 = services().s3();
        let creds = Credentials::new(
            &s3.access_key_id,
            &s3.secret_access_key,
            None,
            None,
            "tributary-dev",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new(s3.region.clone()))
            .endpoint_url(&s3.endpoint)
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let bucket = unique_name("smoke").replace('_', "-");
        client.create_bucket().bucket(&bucket).send().await.unwrap();
        let key = "warehouse/db/t/metadata/v1.metadata.json";
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from_static(b"first"))
            .send()
            .await
            .unwrap();
        let body = client
            .get_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await;
        assert_eq!(body.unwrap().into_bytes().as_ref(), b"first");

        // The commit primitive of the S3 catalog: a second create must lose.
        let err = client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from_static(b"second"))
            .send()
            .await
            .expect_err("If-None-Match: * on an existing key must fail");
        let status = err.raw_response().map(|r| r.status().as_u16());
        assert_eq!(status, Some(412), "{err:?}");
        let body = client
            .get_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await;
        assert_eq!(
            body.unwrap().into_bytes().as_ref(),
            b"first",
            "the loser changed nothing"
        );
        client
            .delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        client.delete_bucket().bucket(&bucket).send().await.unwrap();
    }
}

mod pyiceberg {
    use super::*;

    #[test]
    fn pyiceberg_is_pinned_and_reads_a_table_it_wrote() {
        let s = services();
        let dir = s_dir();
        let out = s.run_python(
            r#"
import sys, pyiceberg, pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
w = sys.argv[1]
cat = SqlCatalog("smoke", uri=f"sqlite:///{w}/catalog.db", warehouse=f"file://{w}")
cat.create_namespace("ns")
t = cat.create_table("ns.t", schema=pa.schema([("id", pa.int64())]))
t.append(pa.table({"id": [1, 2, 3]}))
print(pyiceberg.__version__, sorted(t.scan().to_arrow()["id"].to_pylist()))
"#,
            &[dir.to_str().unwrap()],
        );
        assert_eq!(out.trim(), "0.12.0 [1, 2, 3]");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn s_dir() -> std::path::PathBuf {
        let d = tributary_testkit::dev_dir()
            .join("tmp")
            .join(unique_name("pyiceberg"));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
