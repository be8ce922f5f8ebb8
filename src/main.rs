//! The `proxrt` binary: the daemon (`proxrt serve`) and its debugging client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use proxrt::client::{self, ClientError};
use proxrt::config::{self, Config};

#[derive(Parser)]
#[command(name = "proxrt", version, about = "Kubernetes CRI runtime for Proxmox VE hosts")]
struct Cli {
    /// CRI endpoint of the daemon the client commands talk to.
    #[arg(long, global = true, env = "PROXRT_ENDPOINT", default_value = "unix:///run/proxrt/proxrt.sock")]
    endpoint: String,
    /// Seconds a client command waits for the daemon's answer.
    #[arg(long, global = true, default_value_t = 600)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CRI daemon.
    Serve(ServeArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the runtime's name and versions (CRI Version).
    Version,
    /// Show the runtime's conditions and configuration (CRI Status, verbose).
    Info,
    /// Pull an image from its registry.
    Pull {
        image: String,
        /// Registry credentials as USER:PASSWORD.
        #[arg(long)]
        creds: Option<String>,
        /// Print only the image id.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images.
    Images {
        /// Only this image (name, digest or id).
        image: Option<String>,
        /// Print only image ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove images.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's status, config and layers as JSON.
    Inspecti { image: String },
    /// Run a command in a new pod and container, stream its output, exit with its code.
    Run {
        /// Image to run (must be present: `proxrt pull` or `proxrt image import` first).
        #[arg(long)]
        image: String,
        /// Environment variables KEY=VALUE (repeatable).
        #[arg(short, long)]
        env: Vec<String>,
        /// Pod name (default run-<random>).
        #[arg(long)]
        name: Option<String>,
        /// Use the host's network namespace.
        #[arg(long)]
        net_host: bool,
        /// RuntimeClass handler to ask for.
        #[arg(long, default_value = "")]
        runtime: String,
        /// Keep the pod and container afterwards.
        #[arg(long)]
        keep: bool,
        /// The command and its arguments (default: the image's).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Image commands that CRI has no call for.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); every key has a default (`proxrt config default`).
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log filter, e.g. `info`, `proxrt=debug` (overrides daemon.log_level and RUST_LOG).
    #[arg(long)]
    log_level: Option<String>,
    /// Override daemon.socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Override daemon.root.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Override daemon.run_dir.
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration file.
    Default,
    /// Check a configuration file and print the effective configuration.
    Check {
        #[arg(default_value = config::DEFAULT_PATH)]
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Load images from an OCI layout dir, an OCI archive or a docker-archive tar.
    Import {
        path: PathBuf,
        /// Name to give the image (repeatable); default: the names the archive carries.
        #[arg(long)]
        tag: Vec<String>,
    },
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == proxrt::monitor::ZYGOTE_SUBCOMMAND) { // monitor-dispatch
        proxrt::monitor::zygote_main(proxrt::monitor::ZYGOTE_FD) // monitor-dispatch
    } // monitor-dispatch
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { path }) => match Config::load(&path, true) {
            Ok(c) => {
                println!("{}", toml::to_string_pretty(&c).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("proxrt: {e}");
                ExitCode::from(2)
            }
        },
        command => run_client(&cli.endpoint, Duration::from_secs(cli.timeout), command),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let explicit = args.config.as_os_str() != config::DEFAULT_PATH;
    let mut config = match Config::load(&args.config, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("proxrt: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(s) = args.socket {
        config.daemon.socket = s;
    }
    if let Some(r) = args.root {
        config.daemon.root = r;
    }
    if let Some(r) = args.run_dir {
        config.daemon.run_dir = r;
    }
    init_logging(args.log_level.as_deref(), &config.daemon.log_level);
    // The zygote must be forked while this process has one thread: libcontainer is only
    // ever called from single-threaded processes (DESIGN.md decision 1).
    let zygote = match proxrt::monitor::Zygote::spawn() {
        Ok(z) => z,
        Err(e) => {
            eprintln!("proxrt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("proxrt: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxrt::daemon::serve(config, zygote)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("proxrt: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(flag: Option<&str>, configured: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match (flag, std::env::var("RUST_LOG").ok()) {
        (Some(f), _) => EnvFilter::try_new(f),
        (None, Some(env)) => EnvFilter::try_new(env),
        (None, None) => EnvFilter::try_new(configured),
    }
    .unwrap_or_else(|e| {
        eprintln!("proxrt: bad log filter ({e}); using info");
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run_client(endpoint: &str, timeout: Duration, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("proxrt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), ClientError> = runtime.block_on(async {
        let mut cri = client::connect(endpoint, timeout).await?;
        match command {
            Command::Version => client::version(&mut cri).await,
            Command::Info => client::info(&mut cri).await,
            Command::Pull { image, creds, quiet } => client::pull(&mut cri, &image, creds.as_deref(), quiet).await,
            Command::Images { image, quiet } => client::images(&mut cri, image.as_deref(), quiet).await,
            Command::Rmi { images } => client::rmi(&mut cri, &images).await,
            Command::Inspecti { image } => client::inspecti(&mut cri, &image).await,
            Command::Image(ImageCommand::Import { path, tag }) => client::import(&mut cri, &path, &tag).await,
            Command::Run { image, env, name, net_host, runtime, keep, command } => {
                let opts = client::RunOptions { image, command, env, name, host_network: net_host, runtime_handler: runtime, keep };
                let code = client::run(&mut cri, &opts).await?;
                std::process::exit(code.clamp(0, 255));
            }
            Command::Serve(_) | Command::Config(_) => unreachable!("handled before connecting"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxrt: {e}");
            ExitCode::FAILURE
        }
    }
}
