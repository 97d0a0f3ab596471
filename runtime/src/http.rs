//! The job's one HTTP listener (`[pipeline] http_listen`, e.g.
//! `127.0.0.1:9464`): `/metrics` (Prometheus), `/status` (JSON, with the
//! source → target lineage), completeness for schedulers
//! (`/v1/tables/{db.table}/completeness`, `/v1/tables/{db.table}/ready?until=…`
//! — 200 when complete, 404 otherwise, so Airflow's HttpSensor works
//! unchanged) and a small read-only status page at `/`. Read-only: nothing
//! here changes the job. No secret is in any of it (the status holds none).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tributary_core::{Error, Result};

use crate::metrics::Metrics;
use crate::status::{PipelineStatus, TableStatus};

#[derive(Clone)]
struct AppState {
    status: PipelineStatus,
    metrics: Metrics,
    source: String,
    sink: String,
}

/// Binds `addr` and serves until the returned task is aborted.
pub(crate) async fn serve(
    addr: &str,
    status: PipelineStatus,
    metrics: Metrics,
    lineage: (String, String),
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::invalid_config(format!(
            "pipeline.http_listen = {addr:?}: cannot listen there ({e}); pick a free port or \
             leave http_listen unset"
        ))
    })?;
    let state = AppState {
        status,
        metrics,
        source: lineage.0,
        sink: lineage.1,
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status_json))
        .route("/v1/tables/{table}/completeness", get(completeness))
        .route("/v1/tables/{table}/ready", get(ready))
        .with_state(state);
    tracing::info!(%addr, "serving /metrics, /status and the status page");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the HTTP listener stopped");
        }
    }))
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let body = s.metrics.render(&s.status);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn table_json(table: &str, t: &TableStatus) -> serde_json::Value {
    let watermark_ms = t.watermark_micros.map(|w| w.div_euclid(1000));
    serde_json::json!({
        "table": table,
        "target": t.target,
        "phase": if t.paused.is_some() { "paused" } else if t.committed_round.is_some() { "streaming" } else { "starting" },
        "paused_cause": t.paused,
        "rows_written": t.rows_written,
        "committed_round": t.committed_round,
        "committed_position": t.committed_position.as_ref().map(ToString::to_string),
        "watermark_ms": watermark_ms,
        "lag_seconds": watermark_ms.map(|w| (now_ms() - w).max(0) as f64 / 1000.0),
    })
}

async fn status_json(State(s): State<AppState>) -> Json<serde_json::Value> {
    let tables: Vec<serde_json::Value> = s
        .status
        .snapshot()
        .iter()
        .map(|(id, t)| table_json(&id.to_string(), t))
        .collect();
    Json(serde_json::json!({
        "source": s.source,
        "sink": s.sink,
        "lineage": tables.iter().map(|t| serde_json::json!({
            "from": format!("{}:{}", s.source, t["table"].as_str().unwrap_or_default()),
            "to": format!("{}:{}", s.sink, t["target"].as_str().unwrap_or_default()),
        })).collect::<Vec<_>>(),
        "tables": tables,
    }))
}

fn find(s: &AppState, table: &str) -> Option<TableStatus> {
    s.status
        .snapshot()
        .into_iter()
        .find(|(id, _)| id.to_string() == table)
        .map(|(_, t)| t)
}

async fn completeness(State(s): State<AppState>, Path(table): Path<String>) -> Response {
    match find(&s, &table) {
        None => (
            StatusCode::NOT_FOUND,
            format!("{table} is not a table of this job\n"),
        )
            .into_response(),
        Some(t) => Json(serde_json::json!({
            "table": table,
            "watermark_ms": t.watermark_micros.map(|w| w.div_euclid(1000)),
            "paused": t.paused.is_some(),
        }))
        .into_response(),
    }
}

/// `until`: milliseconds since the epoch, or an RFC 3339 UTC time.
fn parse_until(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let at = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

async fn ready(
    State(s): State<AppState>,
    Path(table): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(until) = q
        .get("until")
        .map(String::as_str)
        .map_or(Some(now_ms()), parse_until)
    else {
        return (
            StatusCode::BAD_REQUEST,
            "until: milliseconds since the epoch or a UTC time like 2026-12-01T10:00:00Z\n",
        )
            .into_response();
    };
    let watermark = find(&s, &table).and_then(|t| t.watermark_micros.map(|w| w.div_euclid(1000)));
    match watermark {
        Some(w) if w >= until => (StatusCode::OK, format!("complete up to {w}\n")).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            format!("not complete up to {until}\n"),
        )
            .into_response(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(s): State<AppState>) -> Html<String> {
    let mut rows = String::new();
    for (id, t) in s.status.snapshot() {
        let v = table_json(&id.to_string(), &t);
        let cell = |k: &str| match &v[k] {
            serde_json::Value::Null => "–".to_string(),
            serde_json::Value::String(x) => escape(x),
            other => escape(&other.to_string()),
        };
        rows.push_str(&format!(
            "<tr data-table=\"{t}\"><td>{t}</td><td>{target}</td><td class=\"phase\">{phase}</td>\
             <td>{lag}</td><td>{wm}</td><td>{round}</td><td>{pos}</td><td>{rows}</td><td>{cause}</td></tr>\n",
            t = escape(&id.to_string()),
            target = cell("target"),
            phase = cell("phase"),
            lag = cell("lag_seconds"),
            wm = cell("watermark_ms"),
            round = cell("committed_round"),
            pos = cell("committed_position"),
            rows = cell("rows_written"),
            cause = cell("paused_cause"),
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>tributary: {source} → {sink}</title><style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head>\
         <body><h1>tributary: {source} → {sink}</h1><table id=\"tables\"><tr><th>table</th><th>target</th>\
         <th>phase</th><th>lag (s)</th><th>watermark (ms)</th><th>round</th><th>position</th>\
         <th>rows this run</th><th>paused cause</th></tr>\n{rows}</table>\
         <p><a href=\"/metrics\">/metrics</a> · <a href=\"/status\">/status</a></p></body></html>",
        source = escape(&s.source),
        sink = escape(&s.sink),
    ))
}
