//! The command line: `serve`, offline tools, and client commands that talk to a
//! running server. One exit-code scheme ([`Exit`]) for all of them.

mod args;
mod client;
mod export;
mod output;
mod report;
mod tail;
mod watch;

use std::process::ExitCode;

use clap::CommandFactory;

pub use args::{Cli, Cmd, Connection};

use crate::config::{Config, Overrides};

/// The exit codes (listed in `--help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The server refused or failed the request, or a local file failed.
    Failed = 1,
    /// `verify`: an entry does not verify.
    Mismatch = 2,
    /// The command line is wrong (EX_USAGE).
    Usage = 64,
    /// The server cannot be reached or is unavailable (EX_UNAVAILABLE).
    Unavailable = 69,
    /// No usable token, or its role may not do this (EX_NOPERM).
    NotAllowed = 77,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Prints a failure as one line, or as JSON on stderr under `--json`.
pub(crate) fn report_error(json: bool, exit: Exit, code: Option<&str>, message: &str) {
    if json {
        eprintln!(
            "{}",
            serde_json::json!({"error": {"exit": exit as u8, "code": code, "message": message}})
        );
    } else {
        eprintln!("privledger: {}", crate::safe_text::escape(message));
    }
}

/// `--json` appears among the arguments (for errors found before they are parsed).
fn wants_json() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// The command-line grammar as help, completions and the man page show it: an
/// environment hint reads `[env: NAME]`, never a dangling `NAME=` or a value that
/// happens to be set.
pub fn command() -> clap::Command {
    fn hide_env_values(c: clap::Command) -> clap::Command {
        c.mut_args(|a| a.hide_env_values(true))
            .mut_subcommands(hide_env_values)
    }
    hide_env_values(Cli::command())
}

/// Connection flags given before the command (`privledger --server X check bob`, as
/// earlier versions took them) are moved after it, where the command defines them.
fn hoist_connection_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const WITH_VALUE: &[&str] = &[
        "--server",
        "--token",
        "--token-file",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--timeout",
    ];
    let mut it = args.into_iter();
    let mut out: Vec<std::ffi::OsString> = it.next().into_iter().collect();
    let mut hoisted = Vec::new();
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        let text = a.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        if text == "--json" {
            hoisted.push(a);
        } else if WITH_VALUE.contains(&name) {
            let inline = text.contains('=');
            hoisted.push(a);
            if !inline {
                if let Some(v) = it.next() {
                    hoisted.push(v);
                }
            }
        } else {
            rest.push(a);
            rest.extend(it.by_ref());
        }
    }
    out.extend(rest);
    out.extend(hoisted);
    out
}

/// Parses the command line; help and version exit 0, any usage error 64.
fn parse() -> Result<Cli, ExitCode> {
    use clap::FromArgMatches;
    // An empty connection variable is unset (`PRIVLEDGER_SERVER= privledger status`
    // asks the default server), not an empty address. Single-threaded here.
    for name in [
        crate::config::ENV_SERVER,
        crate::config::ENV_TOKEN,
        crate::config::ENV_TOKEN_FILE,
    ] {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
    let args = hoist_connection_flags(std::env::args_os().collect());
    match command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => Ok(c),
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    // Help asked for by leaving out a subcommand is still a usage error.
                    Err(
                        if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                            Exit::Usage.into()
                        } else {
                            Exit::Ok.into()
                        },
                    )
                }
                _ if wants_json() => {
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or_default();
                    let msg = first.strip_prefix("error: ").unwrap_or(first);
                    report_error(true, Exit::Usage, Some("USAGE"), msg);
                    Err(Exit::Usage.into())
                }
                _ => {
                    let _ = e.print();
                    Err(Exit::Usage.into())
                }
            }
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match &cli.command {
        Cmd::Completions { shell } => {
            // Written whole, then copied out: `completions fish | head -1` closes the
            // pipe early, and clap_complete panics on a failed write of its own.
            let mut cmd = command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "privledger", &mut script);
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("privledger: cannot write the completions: {e}");
                    Exit::Failed.into()
                }
                _ => ExitCode::SUCCESS,
            };
        }
        Cmd::Man { out } => return man(out.as_deref()),
        _ => {}
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("privledger: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Cmd::Serve(args) => {
            // Configuration is checked before anything is bound.
            let cfg = match Config::load(args.config.as_deref(), &args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("privledger: {e}");
                    return Exit::Usage.into();
                }
            };
            crate::telemetry::init();
            // Whatever the caller's umask, what the server creates is its user's alone.
            crate::private_fs::restrict_umask();
            rt.block_on(serve(cfg))
        }
        Cmd::AdminToken { config, data_dir } => {
            let o = Overrides {
                data_dir,
                ..Overrides::default()
            };
            let cfg = match Config::load(config.as_deref(), &o) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("privledger: {e}");
                    return Exit::Usage.into();
                }
            };
            crate::private_fs::restrict_umask();
            match rt.block_on(crate::recovery::admin_token(&cfg.data_dir)) {
                Ok(r) => {
                    println!(
                        "recorded admin token {:?} at seq {}; its secret is in {} (mode 0600)",
                        r.name,
                        r.seq,
                        r.secret_file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("privledger: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        command => rt.block_on(client::run(command)),
    }
}

/// The man page on stdout, or one page per command into `dir`.
fn man(dir: Option<&std::path::Path>) -> ExitCode {
    let cmd = command();
    let result = match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
        Some(d) => std::fs::create_dir_all(d).and_then(|()| clap_mangen::generate_to(cmd, d)),
    };
    match result {
        Ok(()) => {
            if let Some(d) = dir {
                println!("man pages written to {}", d.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("privledger: cannot write the man page: {e}");
            Exit::Failed.into()
        }
    }
}

async fn serve(cfg: Config) -> ExitCode {
    let listener = match cfg.listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("privledger: cannot listen on {addr}: {e}");
                // Taken by another process: the service is unavailable (EX_UNAVAILABLE).
                return if e.kind() == std::io::ErrorKind::AddrInUse {
                    Exit::Unavailable.into()
                } else {
                    ExitCode::FAILURE
                };
            }
        },
        None => None,
    };
    match crate::server::run(cfg, listener, crate::signal::shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("privledger: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hoist(args: &[&str]) -> Vec<String> {
        hoist_connection_flags(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn connection_flags_before_the_command_move_after_it() {
        assert_eq!(
            hoist(&[
                "pl",
                "--server",
                "h:1",
                "--json",
                "--token=x",
                "check",
                "bob"
            ]),
            [
                "pl",
                "check",
                "bob",
                "--server",
                "h:1",
                "--json",
                "--token=x"
            ]
        );
        // After the command nothing moves, not even a value that looks like a flag.
        assert_eq!(
            hoist(&["pl", "grant", "revoke", "7", "--reason", "--server"]),
            ["pl", "grant", "revoke", "7", "--reason", "--server"]
        );
        assert_eq!(hoist(&["pl", "--help"]), ["pl", "--help"]);
    }

    #[test]
    fn the_grammar_is_consistent() {
        command().debug_assert();
    }

    /// Every command and every flag has a one-line description; every command that
    /// does something has an example or a subcommand list.
    #[test]
    fn every_command_and_flag_says_what_it_is_for() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if c.get_about().is_none() && !path.is_empty() {
                missing.push(format!("command `{path}`"));
            }
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() {
                    missing.push(format!("`{path}` argument `{id}`"));
                }
            }
            for sub in c.get_subcommands() {
                let p = format!("{path} {}", sub.get_name()).trim().to_string();
                walk(sub, &p, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&command(), "", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:#?}");
    }
}
