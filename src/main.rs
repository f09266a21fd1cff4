//! `troupe`: the node binary. Parses the command line, loads and validates configuration, then builds
//! one node — observability, the supervision tree, the gateway — and stops it in reverse on SIGTERM or
//! SIGINT. Errors at this edge are `anyhow`; each is one clear line on stderr and exit code 1.

mod app;
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
