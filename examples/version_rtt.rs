//! Version round trips against one or more CRI endpoints, interleaved call by call so
//! that every endpoint sees the same machine load; prints `proxrt bench`'s table
//! (median, p99, min, max in ms), one row per endpoint. The first 100 calls on each
//! connection are not timed.
//!
//! ```text
//! cargo run --example version_rtt -- -n 2000 unix:///tmp/a/proxrt.sock unix:///tmp/b/proxrt.sock
//! ```
//! docs/benchmarks.md has the numbers measured for the unix socket's authority layer.

use std::time::Duration;

use k8s_cri::v1::VersionRequest;
use proxrt::client::bench_report::Report;

const WARM_UP: usize = 100;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut n = 1000;
    if let Some(i) = args.iter().position(|a| a == "-n") {
        n = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or("-n takes a number of calls")?;
        args.drain(i..i + 2);
    }
    if args.is_empty() {
        return Err("usage: version_rtt [-n CALLS] ENDPOINT...".into());
    }
    let mut clients = Vec::new();
    for endpoint in &args {
        clients.push(proxrt::client::connect(endpoint, Duration::from_secs(10)).await?);
    }
    let request = || VersionRequest {
        version: "v1".into(),
    };
    let mut report = Report::default();
    for i in 0..WARM_UP + n {
        for (endpoint, cri) in args.iter().zip(clients.iter_mut()) {
            if i < WARM_UP {
                cri.runtime.version(request()).await?;
            } else {
                report
                    .time(endpoint, cri.runtime.version(request()))
                    .await?;
            }
        }
    }
    report.print_table(&mut std::io::stdout().lock())?;
    Ok(())
}
