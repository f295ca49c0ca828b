use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use custodian::config::Config;
use custodian::server;

/// Custodian: governance-first customer-success platform.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform (the default).
    Serve {
        /// Create a demo tenant on first start and print its owner's credentials once.
        #[arg(long)]
        demo: bool,
        /// Address to listen on (overrides BIND_ADDR).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
        /// Data directory for the embedded database and key (overrides CUSTODIAN_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Guardrail tools.
    Guardrails {
        #[command(subcommand)]
        command: GuardrailsCommand,
    },
}

#[derive(Subcommand)]
enum GuardrailsCommand {
    /// Read JSON lines {"text": "…"} on stdin; write one JSON line of findings and masked text
    /// per input, with the built-in rule packs.
    Scan,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a tenant's hash chain; exits 1 and names the first broken link if it does not hold.
    Verify {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
    },
}

/// Tracing to stderr, for commands whose stdout is their output.
fn init_stderr_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // `guardrails scan` writes JSON lines on stdout: its logs go to stderr,
    // or a single log line would corrupt the output a scorer parses.
    if matches!(cli.command, Some(Command::Guardrails { .. })) {
        init_stderr_tracing(config.log_json);
    } else {
        server::init_tracing(config.log_json);
    }
    let command = cli.command.unwrap_or(Command::Serve {
        demo: false,
        bind: None,
        data_dir: None,
    });
    let outcome = match command {
        Command::Serve {
            demo,
            bind,
            data_dir,
        } => {
            config.bind = bind.unwrap_or(config.bind);
            config.data_dir = data_dir.unwrap_or(config.data_dir);
            server::serve(config, demo, custodian::web::router)
                .await
                .map(|_| true)
        }
        Command::Migrate => server::migrate(config).await.map(|_| true),
        Command::Audit {
            command: AuditCommand::Verify { tenant },
        } => server::audit_verify(config, &tenant).await,
        Command::Guardrails {
            command: GuardrailsCommand::Scan,
        } => {
            let policy = custodian::guardrails::Policy::builtin();
            custodian::guardrails::scan_jsonl(
                std::io::stdin().lock(),
                std::io::stdout().lock(),
                &policy,
            )
            .map(|stats| {
                tracing::info!(
                    lines = stats.lines,
                    errors = stats.errors,
                    "guardrails scan finished"
                );
                true
            })
            .map_err(anyhow::Error::from)
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
