//! `warden-verify`: checks an audit export (`warden.audit_export`) offline,
//! with the database's audit public key (`warden.audit_public_key()`),
//! using the same code as the database.
//!
//!   warden-verify --public-key <64 hex digits> [--digest <file>] [export file, or - for stdin]
//!
//! `--digest`: a digest kept from `warden.audit_digest()`; the export must
//! then also reach and agree with each of its checkpoints (signed under
//! the same key), so a log cut or rewritten since the digest was taken
//! fails even when its export is consistent in itself.
//!
//! Prints one line per chain: `<chain>: ok, <n> events` or
//! `<chain>: FAILED at seq <n>: <reason>`. Exit status 0 when every chain
//! verifies, 1 when one does not, 2 when the input cannot be read.

use std::io::Read;
use std::process::ExitCode;

use warden_core::audit::{to_hex, verify_export};

fn usage() -> ExitCode {
    eprintln!(
        "usage: warden-verify --public-key <64 hex digits> [--digest <file>] [export file | -]"
    );
    ExitCode::from(2)
}

/// The checkpoint lines of a kept digest made under `public_key`, for the
/// chains the export holds (a digest covers every chain, an export one).
fn digest_lines(path: &str, public_key: &[u8], export: &str) -> Result<String, String> {
    let exported: std::collections::BTreeSet<String> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["chain"].as_str().map(str::to_string))
        .collect();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the digest: {e}"))?;
    let digest: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| "the digest is not JSON".to_string())?;
    if digest["format"] != "pg_warden audit digest v1" {
        return Err("not a pg_warden audit digest".into());
    }
    if digest["public_key"].as_str() != Some(to_hex(public_key).as_str()) {
        return Err("the digest was made under another public key".into());
    }
    let checkpoints = digest["checkpoints"]
        .as_array()
        .ok_or("the digest has no checkpoints")?;
    Ok(checkpoints
        .iter()
        .filter(|c| c["chain"].as_str().is_some_and(|ch| exported.contains(ch)))
        .map(|c| format!("{c}\n"))
        .collect())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let digest = match args.iter().position(|a| a == "--digest") {
        Some(i) if i + 1 < args.len() => {
            let path = args.remove(i + 1);
            args.remove(i);
            Some(path)
        }
        Some(_) => return usage(),
        None => None,
    };
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
    if let Some(path) = digest {
        match digest_lines(&path, &public_key, &text) {
            Ok(lines) => {
                text.push('\n');
                text.push_str(&lines);
            }
            Err(e) => {
                eprintln!("warden-verify: {e}");
                return ExitCode::from(2);
            }
        }
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
