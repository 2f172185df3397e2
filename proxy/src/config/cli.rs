//! The command line: the proxy's options (flattened from the option table) and the `drain`
//! subcommand, with each option's default added to its help from the table.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::Options;
use super::options::default_texts;

/// Command line of the `sigsci-proxy` binary.
#[derive(Debug, Parser)]
#[command(name = "sigsci-proxy", version, about, long_about = None)]
pub struct Cli {
    /// A subcommand; without one the proxy runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the proxy itself.
    #[command(flatten)]
    pub options: Options,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask the proxy running on this machine to drain, through its control socket (a local
    /// Unix socket, never the network), for an exec preStop hook. Run with the server's
    /// `SIGSCI_PROXY_*` environment it finds the server's socket with no flag.
    Drain {
        /// The proxy's control socket (default: the one the server derives).
        #[arg(long, env = "SIGSCI_PROXY_CONTROL_SOCKET", value_name = "PATH")]
        control_socket: Option<PathBuf>,
        /// The proxy's admin address, from which the default control socket is derived.
        #[arg(long, env = "SIGSCI_PROXY_ADMIN", value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// The proxy's TOML file, read for `control-socket` and `admin`.
        #[arg(long, env = "SIGSCI_PROXY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Say what is wrong with an install (run with your kubeconfig): its objects, the agents'
    /// Secret and image, agents and proxies ready, what each proxy sees, the uninspected
    /// fraction, the autoscaler and monitoring. Exits 1 when a check fails.
    Check(crate::check::CheckArgs),
}

impl Cli {
    /// The clap command, each option's help ending with its default (`[default: 80ms]`) as the
    /// option table states it. Not clap's own `default_value`: that would fill every option in
    /// and hide whether the flag, the environment or the file set it.
    pub fn command_with_defaults() -> clap::Command {
        let defaults = default_texts();
        let add = |arg: Arg| {
            let Some((_, text)) = defaults.iter().find(|(id, _)| arg.get_id().as_str() == *id)
            else {
                return arg;
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let long = arg.get_long_help().map(ToString::to_string);
            let arg = arg.help(format!("{help} [default: {text}]"));
            match long {
                Some(long) => arg.long_help(format!("{long}\n\n[default: {text}]")),
                None => arg,
            }
        };
        Self::command()
            .mut_args(add)
            .mut_subcommand("drain", |drain| drain.mut_args(add))
    }

    /// Parses the process's arguments and environment (exits with usage on an error, as
    /// `Parser::parse` does), with the help of [`Cli::command_with_defaults`].
    pub fn parse_with_defaults() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}
