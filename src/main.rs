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
        Command::Prices(args) if args.bundled => {
            let region = args.region.unwrap_or_default();
            let (prices, origin) = windlass::aws::pricing::tables::fallback(&region);
            if let windlass::aws::pricing::tables::PriceOrigin::StandIn(stand_in) = origin {
                eprintln!("windlass: no bundled table for {region}; printing {stand_in}'s");
            }
            print!("{}", windlass::aws::pricing::tables::format_table(&prices));
            Ok(())
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
        Command::Convert(args) => convert(&args.files).map(|conversion| {
            for warning in &conversion.warnings {
                eprintln!("{warning}");
            }
            print!("{}", conversion.yaml);
        }),
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

/// Reads every file (`-` is stdin) and converts them together, so a NodePool's kubelet settings
/// can reach an EC2NodeClass from another file.
fn convert(files: &[std::path::PathBuf]) -> windlass::Result<windlass::convert::Conversion> {
    let mut sources = Vec::new();
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(windlass::Error::ReadStdin)?
        } else {
            std::fs::read_to_string(file).map_err(|source| windlass::Error::ReadFile {
                path: file.clone(),
                source,
            })?
        };
        let name = if file.as_os_str() == "-" {
            "stdin".to_owned()
        } else {
            file.display().to_string()
        };
        sources.push((name, text));
    }
    Ok(windlass::convert::convert(&sources)?)
}
