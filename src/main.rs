//! The `tether` binary: parse the command line, run the subcommand, map errors to
//! sysexits codes. Everything else lives in the library.

use std::process::ExitCode;
use tether::cli::{Cmd, Top};
use tether::daemon::{Fatal, EX_USAGE};

#[global_allocator]
static ALLOC: tether::alloc_count::Counting = tether::alloc_count::Counting;

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RUST_LOG")
        .format_timestamp(None)
        .target(env_logger::Target::Stderr)
        .init();
}

fn fail(f: Fatal) -> ExitCode {
    eprintln!("error: {}", f.msg);
    ExitCode::from(f.code)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let prog = args
        .first()
        .map_or("tether", |s| s.rsplit('/').next().unwrap_or(s));
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let top = match <Top as argh::FromArgs>::from_args(&[prog], &rest) {
        Ok(t) => t,
        Err(e) if e.status.is_ok() => {
            print!("{}", e.output);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // argh's message can span lines; the contract is one `error:` line.
            let first = e.output.lines().next().unwrap_or("bad arguments").trim();
            eprintln!("error: {first} (see {prog} --help)");
            return ExitCode::from(EX_USAGE);
        }
    };
    if top.version {
        println!("tether {}", tether::agent::VERSION);
        return ExitCode::SUCCESS;
    }
    match top.cmd {
        None => {
            eprintln!("error: no subcommand given (try {prog} --help)");
            ExitCode::from(EX_USAGE)
        }
        Some(Cmd::Agent(a)) => {
            let verbose = a.verbose;
            let cfg = match a.validate() {
                Ok(c) => c,
                Err(m) => {
                    return fail(Fatal {
                        code: EX_USAGE,
                        msg: m,
                    })
                }
            };
            init_logging(verbose);
            match tether::daemon::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(f) => fail(f),
            }
        }
        Some(Cmd::Ctl(c)) => match tether::ctl::run(c) {
            Ok(code) => ExitCode::from(code),
            Err(f) => fail(f),
        },
        Some(Cmd::Scan(s)) => match tether::scan::run(s) {
            Ok(code) => ExitCode::from(code),
            Err(f) => fail(f),
        },
    }
}
