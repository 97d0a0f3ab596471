//! Server check and credentials against the real MariaDB.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tributary_core::ErrorKind;
use tributary_mysql::{Flavor, MySqlSourceConfig, PasswordSource, check_server, conn::connect};
use tributary_testkit::{DevServices, unique_name};

async fn admin() -> (Conn, MySqlSourceConfig) {
    let m = DevServices::load().mariadb();
    let conn = Conn::new(Opts::from_url(&m.url).unwrap()).await.unwrap();
    (conn, MySqlSourceConfig::new(m.host, m.port, m.user))
}

#[tokio::test]
async fn the_dev_server_passes_the_check() {
    let (_, config) = admin().await;
    let report = check_server(&config).await.unwrap();
    assert_eq!(report.flavor, Flavor::MariaDb);
    assert!(report.version.contains("MariaDB"), "{}", report.version);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_user_without_replication_grants_gets_every_missing_grant_at_once() {
    let (mut root, base) = admin().await;
    let user = unique_name("cdc");
    root.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'"
    ))
    .await
    .unwrap();
    root.query_drop(format!("GRANT SELECT ON *.* TO '{user}'@'%'"))
        .await
        .unwrap();
    let mut config = base.clone();
    config.user = user.clone();
    config.password = PasswordSource::Literal(format!("pw-{user}"));
    let err = check_server(&config)
        .await
        .unwrap()
        .into_result()
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        text.contains("GRANT REPLICATION SLAVE") && text.contains("GRANT BINLOG MONITOR"),
        "{text}"
    );
    root.query_drop(format!(
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'"
    ))
    .await
    .unwrap();
    check_server(&config).await.unwrap().into_result().unwrap();
    root.query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_password_is_picked_up_without_restart_and_never_shown() {
    let (mut root, base) = admin().await;
    let user = unique_name("rot");
    let dir = tributary_testkit::dev_dir().join("tmp").join(&user);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    root.query_drop(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'first-S3CRET'"
    ))
    .await
    .unwrap();
    std::fs::write(&file, "first-S3CRET\n").unwrap();
    let mut config = base.clone();
    config.user = user.clone();
    config.password = PasswordSource::File(file.clone());
    connect(&config).await.unwrap().disconnect().await.unwrap();

    // Rotation: the server and the file change; the same config connects.
    root.query_drop(format!(
        "ALTER USER '{user}'@'%' IDENTIFIED BY 'second-S3CRET'"
    ))
    .await
    .unwrap();
    std::fs::write(&file, "second-S3CRET\n").unwrap();
    connect(&config).await.unwrap().disconnect().await.unwrap();

    // The source changes between the first read and the server's answer (a
    // vault rotating): the reader re-reads it once after "access denied".
    let flag = dir.join("rotated-once");
    let script = format!(
        "if [ -f {f} ]; then echo second-S3CRET; else touch {f}; echo stale-S3CRET; fi",
        f = flag.display()
    );
    let mut by_command = config.clone();
    by_command.password = PasswordSource::Command(vec!["sh".into(), "-c".into(), script]);
    connect(&by_command)
        .await
        .unwrap()
        .disconnect()
        .await
        .unwrap();
    assert!(flag.exists(), "the command ran twice: stale, then fresh");

    // A wrong password fails as Authentication, naming the source, not the value.
    std::fs::write(&file, "wrong-S3CRET").unwrap();
    let err = connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("S3CRET"), "secret leaked: {text}");
    assert!(text.contains("password") && text.contains(&user), "{text}");
    config.password = PasswordSource::Literal("literal-S3CRET".into());
    let err = connect(&config).await.unwrap_err();
    assert!(!format!("{err} {err:?} {config:?}").contains("S3CRET"));
    root.query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A server whose settings would lose changes is refused when the stream
/// starts (as `sync` starts it), naming each setting and its fix. The
/// settings are changed globally for a moment: this binary runs in the
/// serial MariaDB group, and they are restored before anything is asserted.
#[tokio::test]
async fn a_server_that_would_lose_changes_is_refused_at_start_with_the_fix() {
    let (mut root, mut config) = admin().await;
    config.start = tributary_mysql::StartMode::Latest;
    config.tables.include = vec![format!("{}.*", unique_name("none"))];
    root.query_drop("SET GLOBAL binlog_row_image = 'MINIMAL'")
        .await
        .unwrap();
    root.query_drop("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        .await
        .unwrap();
    let refused = tributary_mysql::BinlogReader::start(config.clone(), None).await;
    root.query_drop("SET GLOBAL binlog_row_image = 'FULL'")
        .await
        .unwrap();
    root.query_drop("SET GLOBAL binlog_row_metadata = 'FULL'")
        .await
        .unwrap();
    let err = refused.err().expect("a MINIMAL row image is refused");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{text}");
    assert!(
        text.contains("binlog_row_image is MINIMAL")
            && text.contains("SET GLOBAL binlog_row_image = 'FULL'")
            && text.contains("binlog_row_metadata"),
        "{text}"
    );
    // Restored, the same start succeeds.
    tributary_mysql::BinlogReader::start(config, None)
        .await
        .unwrap();
}
