//! pve-sim: a Proxmox VE API simulator for proxrt's tests and for demos without a
//! Proxmox host (docs/proxmox.md, "Simulator").
//!
//! It serves the LXC endpoints proxrt uses over HTTPS with a CA it generates, checks API
//! tokens with PVE's 401 delay, validates parameters against the PVE 9.1.2 schema, and
//! answers with PVE's status codes and messages. Guests are state only: nothing runs.
//!
//! On start it writes `<state-dir>/ca.pem` and `<state-dir>/info.json` and prints one
//! line, `pve-sim ready {"port":…,"fingerprint":"AA:…","ca_file":…,"token_id":…}`.

mod api;
mod certs;
mod faults;
mod params;
mod schema;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

const DEFAULT_TEMPLATES: &[(&str, u64)] = &[
    (
        "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        126_027_083,
    ),
    (
        "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz",
        3_128_220,
    ),
    (
        "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
        141_826_452,
    ),
];

#[derive(Parser, Debug)]
#[command(
    name = "pve-sim",
    about = "Proxmox VE API simulator (guests are state only)"
)]
struct Args {
    /// Address to listen on (127.0.0.1:0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where ca.pem, info.json (and a generated token secret) are written.
    #[arg(long)]
    state_dir: PathBuf,
    /// The node name.
    #[arg(long, default_value = "pve")]
    node: String,
    /// The API token id accepted, user@realm!tokenid.
    #[arg(long, default_value = "proxrt@pve!cri")]
    token_id: String,
    /// File holding the accepted token secret; without it one is generated and written
    /// to <state-dir>/token-secret.
    #[arg(long)]
    token_secret_file: Option<PathBuf>,
    /// Delay before a 401 (PVE waits about 3 s).
    #[arg(long, default_value_t = 3000)]
    auth_delay_ms: u64,
    /// Default run time of every task, in ms (per type: --faults task_ms).
    #[arg(long, default_value_t = 200)]
    task_ms: u64,
    /// How long calls wait for a guest's create lock before "can't lock file".
    #[arg(long, default_value_t = 10_000)]
    lock_wait_ms: u64,
    /// Templates on storage `local`, `VOLID[=SIZE]`; replaces the default three.
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Storages that can hold container root filesystems.
    #[arg(long = "rootdir-storage", default_values_t = vec!["local-lvm".to_owned()])]
    rootdir_storages: Vec<String>,
    /// Names in the leaf certificate (default: 127.0.0.1, localhost and the node). A
    /// leaf without 127.0.0.1 shows that fingerprint pinning skips the host name check.
    #[arg(long = "leaf-name")]
    leaf_names: Vec<String>,
    /// Faults at start, JSON (or TOML if it ends in .toml); see src/bin/pve-sim/faults.rs.
    #[arg(long)]
    faults: Option<PathBuf>,
}

fn random_secret() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = std::process::id()
            .to_le_bytes()
            .repeat(4)
            .try_into()
            .unwrap_or([7; 16]);
    }
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn fail(message: String) -> ! {
    eprintln!("pve-sim: {message}");
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.state_dir)
        .unwrap_or_else(|e| fail(format!("{}: {e}", args.state_dir.display())));
    let secret = match &args.token_secret_file {
        Some(p) => std::fs::read_to_string(p)
            .map(|s| s.lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_else(|e| fail(format!("{}: {e}", p.display()))),
        None => {
            let s = random_secret();
            let p = args.state_dir.join("token-secret");
            std::fs::write(&p, format!("{s}\n"))
                .unwrap_or_else(|e| fail(format!("{}: {e}", p.display())));
            s
        }
    };
    let templates = match args.templates.is_empty() {
        true => DEFAULT_TEMPLATES
            .iter()
            .map(|(v, s)| api::Template {
                volid: (*v).into(),
                size: *s,
            })
            .collect(),
        false => args
            .templates
            .iter()
            .map(|t| match t.split_once('=') {
                Some((v, s)) => api::Template {
                    volid: v.into(),
                    size: s
                        .parse()
                        .unwrap_or_else(|_| fail(format!("--template {t}: bad size"))),
                },
                None => api::Template {
                    volid: t.clone(),
                    size: 100 << 20,
                },
            })
            .collect(),
    };
    let faults = match &args.faults {
        Some(p) => faults::Faults::load(p).unwrap_or_else(|e| fail(e)),
        None => faults::Faults::default(),
    };
    let leaf_names = match args.leaf_names.is_empty() {
        true => vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            args.node.clone(),
        ],
        false => args.leaf_names.clone(),
    };
    let identity = certs::generate(&args.node, &leaf_names)
        .unwrap_or_else(|e| fail(format!("certificates: {e}")));
    let ca_file = args.state_dir.join("ca.pem");
    std::fs::write(&ca_file, &identity.ca_pem)
        .unwrap_or_else(|e| fail(format!("{}: {e}", ca_file.display())));

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(identity.leaf_chain.clone(), identity.leaf_key.clone_key())
        })
        .unwrap_or_else(|e| fail(format!("TLS setup: {e}")));
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| fail(format!("listen on {}: {e}", args.listen)));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| fail(format!("local address: {e}")))
        .port();
    let sim = Arc::new(api::Sim::new(
        api::Settings {
            node: args.node.clone(),
            token_id: args.token_id.clone(),
            secret,
            auth_delay: Duration::from_millis(args.auth_delay_ms),
            task_ms: args.task_ms,
            lock_wait: Duration::from_millis(args.lock_wait_ms),
            templates,
            rootdir_storages: args.rootdir_storages.clone(),
        },
        faults,
    ));
    let info = json!({
        "port": port,
        "fingerprint": identity.fingerprint,
        "ca_file": ca_file,
        "node": args.node,
        "token_id": args.token_id,
        "pid": std::process::id(),
    });
    let info_file = args.state_dir.join("info.json");
    std::fs::write(&info_file, info.to_string())
        .unwrap_or_else(|e| fail(format!("{}: {e}", info_file.display())));
    println!("pve-sim ready {info}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|e| fail(format!("SIGTERM handler: {e}")));
    tokio::select! {
        _ = server::serve(listener, acceptor, sim) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
