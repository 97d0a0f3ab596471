//! Listing a table's files (orphan cleanup needs what is stored, not only
//! what metadata names): a local directory walk, or S3 `ListObjectsV2`
//! pages. FileIO reads and writes but does not list.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use aws_sdk_s3::config::{Credentials, Region};
use tributary_core::{Error, ErrorKind, Result};

/// A stored file: its location and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub location: String,
    pub size: u64,
    pub modified_ms: i64,
}

/// An S3 client from the `s3.*` catalog properties.
pub(crate) fn s3_client(props: &HashMap<String, String>) -> aws_sdk_s3::Client {
    let get = |k: &str| props.get(k).cloned();
    let region = get("s3.region").unwrap_or_else(|| "us-east-1".into());
    let mut conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new(region))
        .force_path_style(get("s3.path-style-access").is_some_and(|v| v == "true"))
        // A stuck store fails each attempt in time (the SDK retries it).
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .operation_attempt_timeout(crate::catalog_timeout(props))
                .build(),
        );
    if let Some(endpoint) = get("s3.endpoint") {
        conf = conf.endpoint_url(endpoint);
    }
    if let (Some(key), Some(secret)) = (get("s3.access-key-id"), get("s3.secret-access-key")) {
        conf = conf.credentials_provider(Credentials::new(
            key,
            secret,
            None,
            None,
            "catalog-properties",
        ));
    }
    aws_sdk_s3::Client::from_conf(conf.build())
}

/// Every file under `location` (`file://…`, a path, or `s3://bucket/key`).
pub(crate) async fn list_files(
    location: &str,
    s3: Option<&aws_sdk_s3::Client>,
) -> Result<Vec<StoredFile>> {
    if let Some(rest) = location
        .strip_prefix("s3://")
        .or_else(|| location.strip_prefix("s3a://"))
    {
        let client = s3.ok_or_else(|| {
            Error::invalid_config(format!(
                "{location} is on S3 but the catalog has no S3 settings"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        return list_s3(
            client,
            bucket,
            prefix,
            &location[..location.len() - rest.len()],
        )
        .await;
    }
    let dir = location
        .strip_prefix("file://")
        .unwrap_or(location)
        .to_string();
    tokio::task::spawn_blocking(move || list_local(&dir))
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("listing {e}")))?
}

fn list_local(dir: &str) -> Result<Vec<StoredFile>> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(
                    Error::new(ErrorKind::Io, format!("listing {}", d.display())).with_source(e),
                );
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            out.push(StoredFile {
                location: format!("file://{}", path.display()),
                size: meta.len(),
                modified_ms,
            });
        }
    }
    Ok(out)
}

async fn list_s3(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    scheme: &str,
) -> Result<Vec<StoredFile>> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            Error::new(ErrorKind::Io, format!("listing {scheme}{bucket}/{prefix}")).with_source(e)
        })?;
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            out.push(StoredFile {
                location: format!("{scheme}{bucket}/{key}"),
                size: o.size().unwrap_or(0).max(0) as u64,
                modified_ms: o.last_modified().map_or(0, |t| t.to_millis().unwrap_or(0)),
            });
        }
    }
    Ok(out)
}
