//! The `tether` binary: parse the command line, run the subcommand, map errors to
//! sysexits codes. Everything else lives in the library.

use std::process::ExitCode;
use tether::cli::{Cmd, Top};
use tether::exit::{to_stdout, Fatal, EX_USAGE};

#[global_allocator]
static ALLOC: tether::alloc_count::Counting = tether::alloc_count::Counting;

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    // env_logger for its filter (RUST_LOG, -v); each line is formatted on the stack and
    // written without waiting by tether::sys::stderr::Logger.
    let filter = env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RUST_LOG")
        .build();
    tether::sys::stderr::Logger::install(filter);
}

fn main() -> ExitCode {
    // argh reads &str: an argument that is not UTF-8 (a Latin-1 file name, say) is a
    // usage error here, not the panic std::env::args() would make of it.
    let mut args = Vec::new();
    for (i, a) in std::env::args_os().enumerate() {
        match a.into_string() {
            Ok(a) => args.push(a),
            Err(a) if i == 0 => args.push(a.to_string_lossy().into_owned()),
            Err(a) => {
                let shown = tether::exit::printable(&a.to_string_lossy());
                tether::say!("error: argument {i} is not valid UTF-8: {shown}");
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    // As it was called (a symlink's name, say), and shown as `?` where it holds a control
    // character: it is in every usage line.
    let prog = tether::exit::printable(
        (args.first()).map_or("tether", |s| s.rsplit('/').next().unwrap_or(s)),
    );
    let prog = prog.as_str();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let rest = tether::cli::help_first(tether::cli::split_verbose(&rest));
    let top = match <Top as argh::FromArgs>::from_args(&[prog], &rest) {
        Ok(t) => t,
        Err(e) if e.status.is_ok() => return finish(to_stdout(&e.output).map(|_| 0)),
        Err(e) => {
            // argh's message can span lines; the contract is one `error:` line, in the
            // style of the others (lower case, no full stop: "Error parsing option" would
            // follow "error: "), pointing at the subcommand's own help.
            let first = e.output.lines().next().unwrap_or("bad arguments").trim();
            let first = first.strip_prefix("Error ").unwrap_or(first);
            let first = first.strip_suffix('.').unwrap_or(first);
            let mut first = tether::exit::printable(first);
            if let Some(c) = first.get_mut(..1) {
                c.make_ascii_lowercase();
            }
            let help = match rest.first() {
                Some(&sub) if ["agent", "ctl", "scan"].contains(&sub) => format!("{prog} {sub}"),
                _ => prog.to_string(),
            };
            tether::say!("error: {first} (see {help} --help)");
            return ExitCode::from(EX_USAGE);
        }
    };
    if top.version {
        let version = format!(
            "tether {}{}\n",
            tether::agent::VERSION,
            env!("TETHER_COMMIT")
        );
        return finish(to_stdout(&version).map(|_| 0));
    }
    let res = match top.cmd {
        None => Err(Fatal::usage(format!(
            "no subcommand given (try {prog} --help)"
        ))),
        Some(Cmd::Agent(a)) => {
            let verbose = a.verbose;
            a.validate().map_err(Fatal::usage).and_then(|cfg| {
                // SAFETY: first thing after the command line is read: nothing owns a
                // descriptor above 2 yet (the logger opens its own next).
                unsafe { tether::sys::close_inherited() };
                init_logging(verbose);
                tether::daemon::run(cfg).map(|()| 0)
            })
        }
        Some(Cmd::Ctl(c)) => (c.validate()).map_err(Fatal::usage).and_then(|timeout| {
            if let Some(o) = c.misplaced_option() {
                tether::say!(
                    "warning: {o} comes after the command, so it is sent as part of it \
                     (ctl's options go before the command)"
                );
            }
            tether::ctl::run(c, timeout)
        }),
        Some(Cmd::Scan(s)) => (s.validate())
            .map_err(Fatal::usage)
            .and_then(|wait| tether::scan::run(s, wait)),
    };
    finish(res)
}

/// The exit code, and for a failure its one `error:` line.
fn finish(res: Result<u8, Fatal>) -> ExitCode {
    match res {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            // A message may quote what the user or a peer gave (a host name, a file name):
            // one line, and nothing in it reaches the terminal as a control sequence.
            tether::say!("error: {}", tether::exit::printable(&f.msg));
            ExitCode::from(f.code)
        }
    }
}
