//! `warden-verify`: checks an audit export (`warden.audit_export`) offline,
//! with the database's audit public key (`warden.audit_public_key()`),
//! using the same code as the database.
//!
//!   warden-verify --public-key <64 hex digits> [export file, or - for stdin]
//!
//! Prints one line per chain: `<chain>: ok, <n> events` or
//! `<chain>: FAILED at seq <n>: <reason>`. Exit status 0 when every chain
//! verifies, 1 when one does not, 2 when the input cannot be read.

use std::io::Read;
use std::process::ExitCode;

use warden_core::audit::verify_export;

fn usage() -> ExitCode {
    eprintln!("usage: warden-verify --public-key <64 hex digits> [export file | -]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(flag), Some(key)) = (args.first(), args.get(1)) else {
        return usage();
    };
    if flag != "--public-key" || key.len() != 64 {
        return usage();
    }
    let Some(public_key) = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&key[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return usage();
    };
    let mut text = String::new();
    let read = match args.get(2).map(String::as_str) {
        None | Some("-") => std::io::stdin().read_to_string(&mut text).map(|_| ()),
        Some(path) => std::fs::read_to_string(path).map(|t| text = t),
    };
    if let Err(e) = read {
        eprintln!("warden-verify: cannot read the export: {e}");
        return ExitCode::from(2);
    }
    match verify_export(&text, &public_key) {
        Err(e) => {
            eprintln!("warden-verify: line {}: {}", e.line, e.message);
            ExitCode::from(2)
        }
        Ok(verdicts) => {
            let mut all_ok = !verdicts.is_empty();
            for v in &verdicts {
                match v.failure {
                    None => println!("{}: ok, {} events", v.chain, v.checked),
                    Some((seq, reason)) => {
                        all_ok = false;
                        println!("{}: FAILED at seq {seq}: {reason}", v.chain);
                    }
                }
            }
            if verdicts.is_empty() {
                println!("no chain in the export");
            }
            if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
