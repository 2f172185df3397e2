//! The `loadtest` binary: parses the command line and runs the chosen subcommand.

use clap::Parser;
use loadtest::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    // The netns bed is made before the runtime, and this thread enters its switch namespace,
    // so that every thread the runtime starts is a host on the bed's bridge.
    if let Command::Local(l) = &mut cli.command
        && l.bed == loadtest::local::BedKind::Netns
    {
        match loadtest::netbed::Bed::create(l.topology).and_then(|b| b.enter_switch().map(|()| b)) {
            Ok(bed) => l.netbed = Some(bed),
            Err(e) => {
                eprintln!("error: the netns bed cannot be made here: {e:#}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.command {
            Command::Agent(a) => loadtest::cli::run_agent(a).await,
            Command::Drive(d) => loadtest::drive::run_cli(d).await,
            Command::Local(l) => loadtest::cli::run_local(l).await,
            Command::Cluster(c) => loadtest::cluster::run_cli(c).await,
            Command::Bench(b) => loadtest::bench::run_cli(b).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
