//! The `nimbus` binary: parses the command line and runs one verb. Errors become a message
//! on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nimbus::cli::{self, client::ClientArgs};
use nimbus::config::{Overrides, ServerConfig};

#[derive(Parser)]
#[command(
    name = "nimbus",
    version,
    about = "A self-hosted serverless platform that speaks AWS Lambda's protocols"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the platform.
    Serve(ServeArgs),
    /// Create or update a function from a directory.
    Deploy {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::deploy::DeployArgs,
    },
    /// Invoke a function and print its answer.
    Invoke {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::invoke::InvokeArgs,
    },
    /// List functions.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a function.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// Function name.
        name: String,
    },
    /// Print a function's logs.
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::logs::LogsArgs,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, env = "NIMBUS_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Where functions, code and logs are kept.
    #[arg(long, env = "NIMBUS_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// A TOML configuration file.
    #[arg(long, env = "NIMBUS_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Region in ARNs.
    #[arg(long, env = "NIMBUS_REGION")]
    region: Option<String>,
    /// Account of keys that do not name one (12 digits).
    #[arg(long, env = "NIMBUS_ACCOUNT_ID")]
    account_id: Option<String>,
    /// ACCESS_KEY_ID:SECRET_ACCESS_KEY[:ACCOUNT_ID]; repeatable, or comma-separated in
    /// NIMBUS_ACCESS_KEYS. Without any, a key is generated into DATA_DIR/credentials.
    #[arg(long = "access-key", env = "NIMBUS_ACCESS_KEYS", value_delimiter = ',')]
    access_keys: Vec<String>,
    /// Sandbox backend: jail (isolated) or process (development only, no isolation).
    #[arg(long, env = "NIMBUS_SANDBOX")]
    sandbox: Option<String>,
    /// Seconds an idle environment is kept warm.
    #[arg(long, env = "NIMBUS_KEEP_ALIVE_SECS")]
    keep_alive_secs: Option<u64>,
    /// Account concurrency limit (Lambda's default: 1000).
    #[arg(long, env = "NIMBUS_CONCURRENCY_LIMIT")]
    concurrency_limit: Option<u32>,
    /// How the jail limits a function's CPU: share (a weight in proportion to memory; spare
    /// CPU may be used) or quota (also a hard ceiling of that share, as on Lambda).
    #[arg(long, env = "NIMBUS_CPU_LIMIT")]
    cpu_limit: Option<String>,
    /// Jail: start Python runtimes by forking a pre-initialised interpreter (on, the
    /// default) or by exec'ing a fresh one per environment (off). See decision 0010.
    #[arg(long, env = "NIMBUS_PYTHON_ZYGOTE")]
    python_zygote: Option<String>,
    /// Idle CPUs poll for 2 ms around each invocation's start and end instead of halting:
    /// auto (where idle vCPUs halt without polling, e.g. a KVM guest; the default), on or
    /// off. See decision 0011.
    #[arg(long, env = "NIMBUS_IDLE_POLL")]
    idle_poll: Option<String>,
}

fn main() -> ExitCode {
    // The jail's privilege-dropping step re-executes this binary; it must run before anything
    // else (no runtime, no threads).
    if std::env::args_os().nth(1).is_some_and(|a| a == "__jail") {
        nimbus::sandbox::jail::jailer_main();
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nimbus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nimbus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Serve(a) => {
            let config = ServerConfig::resolve(Overrides {
                config_file: a.config,
                listen: a.listen,
                data_dir: a.data_dir,
                region: a.region,
                account_id: a.account_id,
                access_keys: a.access_keys,
                sandbox: a.sandbox,
                keep_alive_secs: a.keep_alive_secs,
                concurrency_limit: a.concurrency_limit,
                cpu_limit: a.cpu_limit,
                python_zygote: a.python_zygote,
                idle_poll: a.idle_poll,
            })?;
            cli::serve::run(config).await?;
            Ok(true)
        }
        Command::Deploy { client, args } => {
            cli::deploy::run(&cli::client::Client::new(&client)?, args).await?;
            Ok(true)
        }
        Command::Invoke { client, args } => {
            cli::invoke::run(&cli::client::Client::new(&client)?, args).await
        }
        Command::List { client } => {
            cli::list::run(&cli::client::Client::new(&client)?).await?;
            Ok(true)
        }
        Command::Delete { client, name } => {
            cli::delete::run(&cli::client::Client::new(&client)?, &name).await?;
            Ok(true)
        }
        Command::Logs { client, args } => {
            cli::logs::run(&cli::client::Client::new(&client)?, args).await?;
            Ok(true)
        }
    }
}
