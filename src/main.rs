//! The `proxrt` binary: the daemon (`proxrt serve`) and its debugging client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use proxrt::client::{self, ClientError};
use proxrt::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "proxrt",
    version,
    about = "Kubernetes CRI runtime for Proxmox VE hosts"
)]
struct Cli {
    /// CRI endpoint of the daemon the client commands talk to (`bench` takes two, to
    /// compare them).
    #[arg(
        long,
        global = true,
        env = "PROXRT_ENDPOINT",
        default_value = "unix:///run/proxrt/proxrt.sock",
        action = clap::ArgAction::Append
    )]
    endpoint: Vec<String>,
    /// Seconds a client command waits for the daemon's answer (default 600); for `exec`,
    /// the command's own timeout (default none).
    #[arg(long, global = true)]
    timeout: Option<u64>,
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
    /// Show the runtime's conditions and configuration (CRI Status, verbose), and where
    /// metrics are served.
    Info,
    /// Exit 0 when the runtime reports RuntimeReady (CRI Status); otherwise print the
    /// reason and exit 1 (also when the daemon cannot be reached). Waits at most 10 s
    /// unless --timeout says otherwise.
    Health,
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
    /// List pod sandboxes.
    Pods {
        /// Print only pod ids.
        #[arg(short, long)]
        quiet: bool,
        /// Only pods in this state: ready or notready.
        #[arg(long)]
        state: Option<String>,
        /// Only pods with this label KEY=VALUE (repeatable).
        #[arg(long)]
        label: Vec<String>,
    },
    /// Start a pod sandbox from a JSON pod config (crictl's format) or from flags; prints its id.
    Runp {
        /// Pod config file (JSON, field names as in the CRI proto: log_directory, …).
        #[arg(required_unless_present = "name", conflicts_with_all = ["name", "namespace", "net_host", "label"])]
        config: Option<PathBuf>,
        /// Pod name (when no config file is given).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Use the host's network namespace.
        #[arg(long)]
        net_host: bool,
        /// Pod label KEY=VALUE (repeatable).
        #[arg(long)]
        label: Vec<String>,
        /// RuntimeClass handler to ask for.
        #[arg(long, default_value = "")]
        runtime: String,
    },
    /// Create a container in a pod from a JSON container config or from flags; prints its id.
    Create {
        /// Pod id (or a unique prefix).
        pod: String,
        /// Container config file (JSON, field names as in the CRI proto).
        #[arg(conflicts_with_all = ["name", "image", "env", "workdir", "label", "command"])]
        config: Option<PathBuf>,
        /// Pod config file sent as sandbox_config (default: built from the pod's status).
        pod_config: Option<PathBuf>,
        /// Container name (when no config file is given).
        #[arg(long, required_unless_present = "config")]
        name: Option<String>,
        /// Image (must be present).
        #[arg(long, required_unless_present = "config")]
        image: Option<String>,
        /// Environment variables KEY=VALUE (repeatable).
        #[arg(short, long)]
        env: Vec<String>,
        /// Container label KEY=VALUE (repeatable).
        #[arg(long)]
        label: Vec<String>,
        /// Working directory.
        #[arg(long)]
        workdir: Option<String>,
        /// The command and its arguments (default: the image's).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Start created containers.
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop running containers: the stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: i64,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Stop (kill) running containers first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop pod sandboxes (and every container in them).
    Stopp {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove pod sandboxes (and every container in them).
    Rmp {
        /// Stop the pods first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List containers (running ones unless -a or --state).
    Ps {
        /// Show every container, not only running ones.
        #[arg(short, long)]
        all: bool,
        /// Print only container ids.
        #[arg(short, long)]
        quiet: bool,
        /// Only containers of this pod (id or unique prefix).
        #[arg(long)]
        pod: Option<String>,
        /// Only containers in this state: created, running, exited or unknown.
        #[arg(long)]
        state: Option<String>,
        /// Only containers with this label KEY=VALUE (repeatable).
        #[arg(long)]
        label: Vec<String>,
    },
    /// Show a container's status and runtime details as JSON.
    Inspect { id: String },
    /// Show a pod sandbox's status and runtime details as JSON.
    Inspectp { id: String },
    /// Print a container's log (the CRI log file on this host).
    Logs {
        /// Keep printing until the container exits.
        #[arg(short, long)]
        follow: bool,
        id: String,
    },
    /// Run a command in a running container; exits with its exit code.
    ///
    /// Without -i/-t: ExecSync (`--timeout S` kills the command after S seconds). With -i
    /// and/or -t: CRI Exec and its streaming URL over WebSocket (stdin passed through, a
    /// terminal in raw mode with its size following the local one).
    Exec {
        /// Pass stdin to the command (streaming Exec).
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Give the command a terminal (streaming Exec; needs a terminal here).
        #[arg(short = 't', long)]
        tty: bool,
        /// Container id (or a unique prefix).
        id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Join a running container's stdio (CRI Attach over WebSocket) until it exits.
    ///
    /// With -i, stdin is passed through; when it ends, a `stdin_once` container's stdin
    /// closes, any other session ends. -t is for containers made with a terminal.
    Attach {
        /// Pass stdin to the container (it must have been created with stdin).
        #[arg(short = 'i', long)]
        stdin: bool,
        /// The container has a terminal: raw mode here, its size follows this one.
        #[arg(short = 't', long)]
        tty: bool,
        /// Container id (or a unique prefix).
        id: String,
    },
    /// Forward a local port to a port in a pod (CRI PortForward over WebSocket), until
    /// Ctrl-C.
    #[command(name = "port-forward")]
    PortForward {
        /// Pod id (or a unique prefix).
        pod: String,
        /// LOCAL:REMOTE (LOCAL 0: any free port), or one port for both.
        ports: String,
    },
    /// Show resource usage of containers (ListContainerStats) or, with --pods, of pods.
    Stats {
        /// Only these containers (or pods) by id or unique prefix.
        ids: Vec<String>,
        /// Pod stats (ListPodSandboxStats) instead of container stats.
        #[arg(long)]
        pods: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = client::Output::Table)]
        output: client::Output,
    },
    /// Change a container's CPU and memory limits (UpdateContainerResources); what is not
    /// given stays as ContainerStatus reports it.
    Update {
        /// Container id (or a unique prefix).
        id: String,
        /// Memory limit: bytes, or with k, m or g (e.g. 64m).
        #[arg(long)]
        memory: Option<String>,
        #[arg(long)]
        cpu_shares: Option<i64>,
        /// CFS quota in microseconds per period.
        #[arg(long)]
        cpu_quota: Option<i64>,
        /// CFS period in microseconds.
        #[arg(long)]
        cpu_period: Option<i64>,
        /// CPUs the container may use, e.g. 0-1.
        #[arg(long)]
        cpuset_cpus: Option<String>,
        /// Memory nodes the container may use, e.g. 0.
        #[arg(long)]
        cpuset_mems: Option<String>,
    },
    /// Print container and pod lifecycle events as they happen (GetContainerEvents), one
    /// line each, until Ctrl-C.
    Events {
        /// Output format (json: one ContainerEventResponse per line).
        #[arg(short, long, value_enum, default_value_t = client::Output::Table)]
        output: client::Output,
    },
    /// Time CRI calls against one endpoint, or two interleaved (any CRI runtime):
    /// median, p90, p99, max, throughput, and B/A ratios.
    Bench(client::BenchArgs),
    /// Explain which backend a pod with one container of IMAGE would get, and why.
    ///
    /// Offline: reads the config (as `serve` would) and probes this host's backends;
    /// creates nothing. Exits 0 when the container would be created, 1 when RunPodSandbox
    /// or CreateContainer would refuse it, 2 on a bad config or argument.
    Select(SelectArgs),
}

#[derive(clap::Args)]
struct SelectArgs {
    /// Configuration file (TOML), as for `proxrt serve`.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// The container's image, as the pod spec names it.
    #[arg(long)]
    image: String,
    /// The pod's RuntimeClass handler.
    #[arg(long, default_value = "")]
    handler: String,
    /// A pod annotation KEY=VALUE (repeatable), e.g. proxrt.io/runtime=crun.
    #[arg(long)]
    annotation: Vec<String>,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
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
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == proxrt::monitor::ZYGOTE_SUBCOMMAND)
    {
        // monitor-dispatch
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
        Command::Select(args) => select(args),
        command => run_client(&cli.endpoint, cli.timeout, command),
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
    // The zygote must be forked while this process has one thread: libcontainer is only
    // ever called from single-threaded processes (docs/libcontainer.md, pitfall 1). It is forked
    // before logging is set up on purpose: a container's init is forked from a monitor
    // with the container's stdio as fd 2, and libcontainer's (and libseccomp's) log lines
    // from inside it would otherwise land in the container's CRI log. Monitors report
    // their errors to the daemon over their sockets instead.
    // Before the zygote and any thread: it is taken out of the environment.
    let notifier = proxrt::notify::Notifier::from_env();
    let zygote = match proxrt::monitor::Zygote::spawn() {
        Ok(z) => z,
        Err(e) => {
            eprintln!("proxrt: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(args.log_level.as_deref(), &config.daemon.log_level);
    let _crash_points = proxrt::crash::setup();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("proxrt: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxrt::daemon::serve(config, zygote, notifier)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("proxrt: {e}");
            ExitCode::FAILURE
        }
    }
}

fn select(args: SelectArgs) -> ExitCode {
    let explicit = args.config.as_os_str() != config::DEFAULT_PATH;
    let config = match Config::load(&args.config, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("proxrt: {e}");
            return ExitCode::from(2);
        }
    };
    let mut annotations = std::collections::HashMap::new();
    for a in &args.annotation {
        let Some((k, v)) = a.split_once('=') else {
            eprintln!("proxrt: --annotation {a:?} is not KEY=VALUE");
            return ExitCode::from(2);
        };
        annotations.insert(k.to_owned(), v.to_owned());
    }
    let e = match proxrt::select::explain_offline(&config, &args.image, &args.handler, &annotations)
    {
        Ok(e) => e,
        Err((key, message)) => {
            eprintln!("proxrt: config key `{key}`: {message}");
            return ExitCode::from(2);
        }
    };
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default()),
        false => print!("{}", e.render()),
    }
    match e.outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
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
    use std::io::IsTerminal as _;
    // Colours only on a terminal: a daemon log redirected to a file stays plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run_client(endpoints: &[String], timeout: Option<u64>, command: Command) -> ExitCode {
    // For exec, --timeout is the command's: the answer may come that much later.
    let rpc_timeout = match (&command, timeout) {
        (Command::Exec { .. }, Some(t)) => Duration::from_secs(t.saturating_add(30)),
        // A health check that hangs is a failed check: systemd and probes want an answer.
        (Command::Health, t) => Duration::from_secs(t.unwrap_or(10)),
        (_, t) => Duration::from_secs(t.unwrap_or(600)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("proxrt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), ClientError> = runtime.block_on(async {
        let endpoint = match (endpoints, &command) {
            (_, Command::Bench(args)) => {
                return client::bench::run(endpoints, rpc_timeout, args).await
            }
            ([endpoint], _) => endpoint,
            _ => {
                return Err(ClientError::Usage(
                    "only `bench` takes more than one --endpoint".into(),
                ))
            }
        };
        let mut cri = client::connect(endpoint, rpc_timeout).await?;
        match command {
            Command::Version => client::version(&mut cri).await,
            Command::Info => client::info(&mut cri).await,
            Command::Health => client::health(&mut cri).await,
            Command::Pull {
                image,
                creds,
                quiet,
            } => client::pull(&mut cri, &image, creds.as_deref(), quiet).await,
            Command::Images { image, quiet } => {
                client::images(&mut cri, image.as_deref(), quiet).await
            }
            Command::Rmi { images } => client::rmi(&mut cri, &images).await,
            Command::Inspecti { image } => client::inspecti(&mut cri, &image).await,
            Command::Image(ImageCommand::Import { path, tag }) => {
                client::import(&mut cri, &path, &tag).await
            }
            Command::Run {
                image,
                env,
                name,
                net_host,
                runtime,
                keep,
                command,
            } => {
                let opts = client::RunOptions {
                    image,
                    command,
                    env,
                    name,
                    host_network: net_host,
                    runtime_handler: runtime,
                    keep,
                };
                let code = client::run(&mut cri, &opts).await?;
                std::process::exit(code.clamp(0, 255));
            }
            Command::Pods {
                quiet,
                state,
                label,
            } => {
                client::pods(
                    &mut cri,
                    &client::PodsOptions {
                        quiet,
                        state,
                        labels: label,
                    },
                )
                .await
            }
            Command::Runp {
                config,
                name,
                namespace,
                net_host,
                label,
                runtime,
            } => {
                let opts = client::RunpOptions {
                    config,
                    name,
                    namespace,
                    host_network: net_host,
                    labels: label,
                    runtime_handler: runtime,
                };
                client::runp(&mut cri, &opts).await
            }
            Command::Create {
                pod,
                config,
                pod_config,
                name,
                image,
                env,
                label,
                workdir,
                command,
            } => {
                let opts = client::CreateOptions {
                    pod_id: pod,
                    config,
                    pod_config,
                    name,
                    image,
                    env,
                    labels: label,
                    workdir,
                    command,
                };
                client::create(&mut cri, &opts).await
            }
            Command::Start { ids } => client::start(&mut cri, &ids).await,
            Command::Stop { time, ids } => client::stop(&mut cri, &ids, time).await,
            Command::Rm { force, ids } => client::rm(&mut cri, &ids, force).await,
            Command::Stopp { ids } => client::stopp(&mut cri, &ids).await,
            Command::Rmp { force, ids } => client::rmp(&mut cri, &ids, force).await,
            Command::Ps {
                all,
                quiet,
                pod,
                state,
                label,
            } => {
                client::ps(
                    &mut cri,
                    &client::PsOptions {
                        all,
                        quiet,
                        pod,
                        state,
                        labels: label,
                    },
                )
                .await
            }
            Command::Inspect { id } => client::inspect(&mut cri, &id).await,
            Command::Inspectp { id } => client::inspectp(&mut cri, &id).await,
            Command::Logs { follow, id } => client::logs(&mut cri, &id, follow).await,
            Command::Exec {
                stdin,
                tty,
                id,
                command,
            } => {
                let code = if stdin || tty {
                    client::exec_stream(&mut cri, &id, &command, stdin, tty).await?
                } else {
                    client::exec(&mut cri, &id, &command, timeout.unwrap_or(0) as i64).await?
                };
                std::process::exit(code.clamp(0, 255));
            }
            Command::Attach { stdin, tty, id } => {
                let code = client::attach(&mut cri, &id, stdin, tty).await?;
                std::process::exit(code.clamp(0, 255));
            }
            Command::PortForward { pod, ports } => {
                client::port_forward(&mut cri, &pod, &ports).await
            }
            Command::Stats { ids, pods, output } => {
                let opts = client::StatsOptions { ids, pods, output };
                client::stats(&mut cri, &opts).await
            }
            Command::Update {
                id,
                memory,
                cpu_shares,
                cpu_quota,
                cpu_period,
                cpuset_cpus,
                cpuset_mems,
            } => {
                let opts = client::UpdateOptions {
                    id,
                    memory,
                    cpu_shares,
                    cpu_quota,
                    cpu_period,
                    cpuset_cpus,
                    cpuset_mems,
                };
                client::update(&mut cri, &opts).await
            }
            Command::Events { output } => client::events(&mut cri, output).await,
            Command::Serve(_) | Command::Config(_) | Command::Select(_) | Command::Bench(_) => {
                unreachable!("handled before connecting")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The shell's code for a command ended by SIGINT.
        Err(ClientError::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("proxrt: {e}");
            ExitCode::FAILURE
        }
    }
}
