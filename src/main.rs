//! `troupe`: the node binary. Parses the command line, loads and validates configuration, then builds
//! one node — observability, the supervision tree, the gateway — and stops it in reverse on SIGTERM or
//! SIGINT. Errors at this edge are `anyhow`; each is one clear line on stderr and exit code 1.

mod app;
mod cluster_status;
mod node;
mod system;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use troupe_config::{ConfigLoader, NodeConfig};

/// Troupe: supervised actors across a cluster, one gateway, one store API.
#[derive(Parser, Debug)]
#[command(name = "troupe", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (embedded store by default; no external servers needed).
    Run(RunArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Cluster tools.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Print the members table as a node sees it (`GET /api/v1/cluster/nodes`).
    Status {
        /// The node's HTTP address, e.g. 127.0.0.1:8080.
        #[arg(long, value_name = "HTTP_ADDR")]
        node: String,
        /// Bearer token of an admin (needed when the node has authentication configured).
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ConfigSource {
    /// TOML config file (default: $TROUPE_CONFIG, else built-in defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Data directory (overrides node.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (overrides http.addr), e.g. 127.0.0.1:8080; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<String>,
    /// Log format (overrides log.format).
    #[arg(long, value_name = "FORMAT", value_parser = ["pretty", "json"])]
    log_format: Option<String>,
    /// Cluster listen address (overrides cluster.addr), e.g. 10.0.0.1:4000.
    #[arg(long, value_name = "ADDR")]
    cluster_addr: Option<String>,
    /// Nodes to join, HOST:PORT[,HOST:PORT…] (overrides cluster.seeds).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT]")]
    join: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the resolved configuration (secrets redacted), or every error; exit 1 on errors.
    Check(ConfigSource),
    /// List every environment variable Troupe reads.
    Env,
}

fn load(source: &ConfigSource, overrides: &[(&str, String)]) -> Result<NodeConfig, String> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let mut loader = ConfigLoader::new().env(vars.iter().cloned());
    if let Some(file) = source.config.clone().or_else(|| troupe_config::env::config_file(vars)) {
        loader = loader.file(file);
    }
    for (key, value) in overrides {
        loader = loader.set(key, value.clone());
    }
    loader.load().map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!("invalid configuration:\n{}", lines.join("\n"))
    })
}

#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the binary's edge: one line of output or error")]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Check(source)) => match load(&source, &[]) {
            Ok(cfg) => {
                for warning in cfg.warnings() {
                    eprintln!("warning: {warning}");
                }
                print!("{}", cfg.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Config(ConfigCommand::Env) => {
            print!("{}", troupe_config::env_markdown_table());
            ExitCode::SUCCESS
        }
        Command::Cluster(ClusterCommand::Status { node, token, json }) => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cluster_status::fetch(&node, token.as_deref())) {
                Ok(body) => {
                    if json {
                        println!("{body}");
                    } else {
                        print!("{}", cluster_status::table(&body));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            let mut overrides = Vec::new();
            if let Some(d) = &args.data_dir {
                overrides.push(("node.data_dir", d.display().to_string()));
            }
            if let Some(a) = &args.http_addr {
                overrides.push(("http.addr", a.clone()));
            }
            if let Some(f) = &args.log_format {
                overrides.push(("log.format", f.clone()));
            }
            if let Some(a) = &args.cluster_addr {
                overrides.push(("cluster.addr", a.clone()));
            }
            if let Some(j) = &args.join {
                overrides.push(("cluster.seeds", j.clone()));
            }
            let cfg = match load(&args.source, &overrides) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(node::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
