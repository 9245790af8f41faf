//! The binary: parse the command line, set up logging, dispatch.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use triton_sidecar::config::{Cli, Command, Config, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRITON_SIDECAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line that names the flag; clap's hint lines follow only with --help.
            let msg = e.render().to_string();
            eprintln!(
                "{}",
                msg.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            None => serve(&cli.args).await,
            Some(Command::Serve(args)) => serve(&args).await,
            Some(Command::Check { args, no_triton }) => match Config::from_args(&args) {
                Ok(cfg) => {
                    init_tracing(cfg.log_format);
                    triton_sidecar::cli::check(cfg, no_triton).await
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    2
                }
            },
            Some(Command::Drain { admin_url, timeout }) => {
                triton_sidecar::cli::drain(&admin_url, timeout).await
            }
            Some(Command::Install { dir }) => triton_sidecar::cli::install(&dir),
        }
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}

async fn serve(args: &triton_sidecar::config::Args) -> i32 {
    let cfg = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    init_tracing(cfg.log_format);
    let signals = match triton_sidecar::signals::os_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return 1;
        }
    };
    match triton_sidecar::run(cfg, signals).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "triton-sidecar failed");
            eprintln!("error: {e}");
            i32::from(e.exit_code())
        }
    }
}
