//! `troupe cluster status --node HTTP_ADDR`: one `GET /api/v1/cluster/nodes` over plain HTTP/1.1 (the
//! binary carries no HTTP client; the answer is one small JSON body) and the members as a table.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer read (a members table is a few KB).
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// The JSON body of `GET /api/v1/cluster/nodes` on `node` (`host:port`, optionally `http://host:port`).
pub async fn fetch(node: &str, token: Option<&str>) -> anyhow::Result<String> {
    let host = node.trim().trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(host))
        .await
        .map_err(|_| anyhow!("connecting to {host} timed out"))?
        .with_context(|| format!("cannot connect to {host}"))?;
    let auth = token.map(|t| format!("Authorization: Bearer {}\r\n", t.trim())).unwrap_or_default();
    let request = format!(
        "GET /api/v1/cluster/nodes HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.context("sending the request")?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), (&mut stream).take(MAX_ANSWER).read_to_end(&mut raw))
        .await
        .map_err(|_| anyhow!("{host} did not answer within 10 s"))?
        .context("reading the answer")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP answer from {host}"))?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        bail!("unexpected chunked answer from {host}");
    }
    if status != 200 {
        let detail = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["detail"].as_str().or(v["title"].as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        bail!("{host} answered {status}: {detail}");
    }
    Ok(body.to_owned())
}

/// The members as a fixed-width table.
pub fn table(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else { return format!("{body}\n") };
    let mut rows = vec![
        ["ID", "NAME", "INCARNATION", "STATUS", "CLUSTER ADDR", "HTTP ADDR", "VIEW", "RTT MS", "SHARDS"]
            .map(String::from),
    ];
    for m in v["members"].as_array().into_iter().flatten() {
        let s = |k: &str| m[k].as_str().unwrap_or("-").to_owned();
        let view = if m["is_self"].as_bool() == Some(true) { "self".to_owned() } else { s("local_health") };
        let rtt = m["rtt_ms"].as_f64().map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        // The number of shards the member owns (`-` when unknown).
        let shards = m["owned_shards"].as_array().map_or_else(|| "-".to_owned(), |s| s.len().to_string());
        rows.push([
            s("id"),
            s("name"),
            m["incarnation"].as_u64().map_or_else(|| "-".to_owned(), |i| i.to_string()),
            s("status"),
            s("cluster_addr"),
            s("http_addr"),
            view,
            rtt,
            shards,
        ]);
    }
    let widths: Vec<usize> = (0..9).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
