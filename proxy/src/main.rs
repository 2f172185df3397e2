//! The `sigsci-proxy` binary: parse configuration, set up logging and signals, then run.

use std::io::IsTerminal;
use std::process::ExitCode;

use sigsci_proxy::config::{Cli, Command, LogFormat};
use sigsci_proxy::{Config, request_drain};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse_with_defaults();
    if let Some(Command::Check(args)) = cli.command {
        return check(args);
    }
    if let Some(Command::Drain {
        control_socket,
        admin,
        config,
    }) = cli.command
    {
        return drain(control_socket, admin, config);
    }
    let memory_limit = sigsci_proxy::config::memory_limit();
    let config = match Config::load_within(cli.options, memory_limit) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("sigsci-proxy: invalid configuration:");
            for p in problems {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = runtime(config.worker_threads);
    init_logging(config.log_format);
    sigsci_proxy::config::memory_budget::log(&config, memory_limit);
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()).instrument(tracing::info_span!("signals")));
        match sigsci_proxy::run(config, shutdown).await {
            Ok(report) if report.cut_off == 0 => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "Cannot start");
                ExitCode::FAILURE
            }
        }
    })
}

/// `sigsci-proxy drain`: asks the proxy on this machine to drain through its control socket,
/// found from the same options (flags, `SIGSCI_PROXY_*`, `--config`) as the server's.
fn drain(
    control_socket: Option<PathBuf>,
    admin: Option<SocketAddr>,
    config: Option<PathBuf>,
) -> ExitCode {
    let path = match Config::drain_control_socket(control_socket, admin, config) {
        Ok(p) => p,
        Err(problems) => {
            for p in problems {
                eprintln!("sigsci-proxy drain: {p}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(request_drain(&path)) {
        Ok(answer) => {
            eprintln!("sigsci-proxy drain: {answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "sigsci-proxy drain: control socket {}: {e} (is the proxy running, with the same SIGSCI_PROXY_CONTROL_SOCKET or SIGSCI_PROXY_ADMIN?)",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `sigsci-proxy check`: every check against the cluster of the user's kubeconfig, printed as
/// text or JSON; exit 1 when one fails, 2 when the cluster cannot be reached at all.
fn check(args: sigsci_proxy::check::CheckArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let client = match sigsci_proxy::check::client(&args).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sigsci-proxy check: no usable kubeconfig: {e:#}");
                return ExitCode::from(2);
            }
        };
        let report = sigsci_proxy::check::check(&client, &args).await;
        if args.output == "json" {
            println!("{}", report.json());
        } else {
            print!("{}", report.text());
        }
        if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

/// One thread runs a current-thread runtime: every task hand-off (connection task, upstream
/// writer and reader) stays on that thread, with no cross-thread wake-up per RPC.
fn runtime(worker_threads: usize) -> tokio::runtime::Runtime {
    let threads = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// First SIGTERM or SIGINT: drain. Second: exit at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("Signal received, draining (again to force exit)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("Second signal, exiting now");
    std::process::exit(130);
}
