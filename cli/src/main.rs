//! hiectl: the developer's and operator's tool for an HIE stack: mint development tokens, load the
//! demo, list and re-submit dead letters.

mod broker;
mod dead_letters;
mod demo;
mod demo_data;
mod quarantine;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hiectl",
    version,
    about = "Developer tool for the local HIE stack"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print an HS256 JWT signed with $HIE_JWT_SECRET.
    Token {
        /// User id (`sub` claim).
        #[arg(long)]
        sub: String,
        #[arg(long)]
        email: String,
        /// Organization id (`org` claim).
        #[arg(long)]
        org: String,
        /// Comma-separated roles, e.g. physician,admin.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[arg(long, default_value_t = 12)]
        ttl_hours: u64,
        /// Also create or update this user's account at this query API (the services honour
        /// tokens of active accounts only), as the bootstrap admin (`HIE_BOOTSTRAP_ADMIN`, default
        /// `hie-admin`).
        #[arg(long, value_name = "QUERY_URL")]
        register: Option<String>,
    },
    /// Create the demo users' accounts, then print their tokens (valid 12 h) as `export` lines.
    Tokens {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        query: String,
    },
    /// Register the demo sources, load the demo data set and print tokens and curl examples.
    Demo {
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        ingest: String,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        query: String,
        /// Synthea sample bundles to load [default: <repo>/../shared/data/synthea when present].
        #[arg(long)]
        synthea_dir: Option<PathBuf>,
        /// Where the demo keeps source API keys [default: $HIE_DATA_DIR, else ./.local].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Exit 0 when the broker answers a Metadata and a ListOffsets request within the timeout,
    /// 1 otherwise (deploy/local/up and its supervisor use it).
    CheckBroker {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Dead letters: what ingest rejected (from the views, DATABASE_URL), and re-submitting it.
    DeadLetters {
        #[command(subcommand)]
        command: dead_letters::Command,
    },
    /// Events the projector set aside (it could not apply them), and applying them again.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::Command,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // One readable line (with its causes) rather than a backtrace: these are user errors.
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        // Done, but not everything succeeded (a re-submission not accepted): already reported.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hiectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<bool> {
    let cli = match cli.command {
        Command::DeadLetters { command } => return dead_letters::run(command).await,
        Command::Quarantine { command } => return quarantine::run(command).await,
        _ => cli,
    };
    match cli.command {
        Command::Token {
            sub,
            email,
            org,
            roles,
            ttl_hours,
            register,
        } => {
            let roles: Vec<&str> = roles.iter().map(|r| r.trim()).collect();
            let user = token::User {
                sub: &sub,
                email: &email,
                org: &org,
                roles: &roles,
            };
            let secret = token::secret_from_env()?;
            if let Some(query) = register {
                demo::ensure_accounts(&secret, query.trim_end_matches('/'), &[&user]).await?;
            }
            println!(
                "{}",
                token::mint(&secret, &user, Duration::from_secs(ttl_hours * 3600))?
            );
            Ok(true)
        }
        Command::Tokens { query } => {
            let secret = token::secret_from_env()?;
            demo::ensure_accounts(&secret, query.trim_end_matches('/'), &demo::demo_users())
                .await?;
            demo::print_tokens(&demo::demo_tokens(&secret)?);
            demo::print_portal_logins(&secret, query.trim_end_matches('/')).await?;
            Ok(true)
        }
        Command::Demo {
            ingest,
            query,
            synthea_dir,
            state_dir,
        } => {
            demo::run(demo::Args {
                ingest,
                query,
                synthea_dir,
                state_dir,
            })
            .await?;
            Ok(true)
        }
        Command::CheckBroker {
            brokers,
            timeout_secs,
        } => {
            let timeout = Duration::from_secs(timeout_secs);
            let summary =
                tokio::task::spawn_blocking(move || broker::check(&brokers, timeout)).await??;
            println!("broker answers: {summary}");
            Ok(true)
        }
        Command::DeadLetters { .. } | Command::Quarantine { .. } => {
            unreachable!("handled above")
        }
    }
}
