//! The daemon's Prometheus endpoint, read as a scraper reads it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::{output_within, proxrt_bin, TestDaemon};

/// An HTTP/1.0 GET: (status line, headers, body).
pub fn get(url: &str) -> (String, String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut conn = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(conn, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers end");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

/// The value of the sample `series` (name and labels, exactly as exposed); 0 if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

/// The daemon's counter `metric` for each value of its one label `label`, in order (0 for
/// a series not exposed yet).
pub fn counts(d: &TestDaemon, metric: &str, label: &str, values: &[&str]) -> Vec<f64> {
    let (_, _, text) = get(&metrics_url(d));
    values
        .iter()
        .map(|v| sample(&text, &format!("{metric}{{{label}=\"{v}\"}}")))
        .collect()
}

/// Where the daemon says it serves metrics (`proxrt info`).
pub fn metrics_url(d: &TestDaemon) -> String {
    let out = output_within(
        Command::new(proxrt_bin())
            .arg("--endpoint")
            .arg(d.endpoint())
            .arg("info"),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "proxrt info: {out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info is JSON");
    info["metrics"]
        .as_str()
        .unwrap_or_else(|| panic!("no metrics in proxrt info: {info}"))
        .to_owned()
}
