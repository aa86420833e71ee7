use std::process::ExitCode;

use clap::Parser;
use windlass::cli::{Cli, Command};
use windlass::crdgen;
use windlass::operator::{run, telemetry};

fn main() -> ExitCode {
    // kube and the AWS SDK share one rustls provider; it must be chosen before any TLS is set up.
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .expect("no other crypto provider is installed this early");
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Runtime::new()
            .map_err(windlass::Error::Runtime)
            .and_then(|runtime| runtime.block_on(run::run(*args))),
        Command::Crdgen(args) => match args.out {
            Some(dir) => crdgen::write_all(&dir).map(|paths| {
                for path in paths {
                    eprintln!("wrote {}", path.display());
                }
            }),
            None => crdgen::render_all().map(|crds| {
                for crd in crds {
                    print!("{}", crd.yaml);
                }
            }),
        },
        Command::Simulate(args) => {
            windlass::simulate::run(&args.files).map(|text| print!("{text}"))
        }
        Command::Prices(args) => tokio::runtime::Runtime::new()
            .map_err(windlass::Error::Runtime)
            .and_then(|runtime| {
                runtime
                    .block_on(windlass::aws::pricing::live_table(args.region))
                    .map_err(windlass::Error::from)
            })
            .map(|table| print!("{table}")),
        Command::Top(args) => tokio::runtime::Runtime::new()
            .map_err(windlass::Error::Runtime)
            .and_then(|runtime| runtime.block_on(windlass::top::run_with_kubeconfig(args.watch))),
        Command::Openapi => {
            print!("{}", windlass::jobs::api::openapi_json());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("windlass: {}", error.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
