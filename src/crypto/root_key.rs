//! The root key (KEK): read once by the postmaster while it loads the
//! library, from `warden.key_file` (which must not be readable by group or
//! others) or from the output of `warden.key_command`. Backends inherit it
//! through fork. It never reaches a table, a setting visible to SQL, a log
//! line or an error: errors name the file and the problem only.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use zeroize::Zeroizing;

use warden_core::crypto::{parse_root_keys, RootKeyring};

use crate::error::WardenError;
use crate::{guc, preload};

static ROOT: OnceLock<Result<RootKeyring, String>> = OnceLock::new();

pub fn load() {
    let result = read_root_keys();
    match &result {
        Ok(ring) => pgrx::log!(
            "pg_warden: root key loaded (versions {:?}, active v{})",
            ring.versions(),
            ring.active().0
        ),
        Err(why) => pgrx::warning!("pg_warden: root key not loaded: {why}"),
    }
    let _ = ROOT.set(result);
    if let Some(Ok(ring)) = ROOT.get() {
        for (ptr, len) in ring.key_regions() {
            super::key_memory::protect(ptr, len);
        }
    }
}

fn read_root_keys() -> Result<RootKeyring, String> {
    if let Some(path) = guc::key_file() {
        let meta = std::fs::metadata(&path)
            .map_err(|e| format!("cannot read key file \"{path}\": {e}"))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "key file \"{path}\" is readable or writable by group or others (mode {:04o}); run chmod 600 on it and restart",
                mode & 0o7777
            ));
        }
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| format!("cannot read key file \"{path}\": {e}"))?;
        return parse_root_keys(&text).map_err(|e| format!("key file \"{path}\": {e}"));
    }
    if let Some(command) = guc::key_command() {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run warden.key_command: {e}"))?;
        let text = Zeroizing::new(
            String::from_utf8(out.stdout)
                .map_err(|_| "warden.key_command printed non-UTF-8 output".to_string())?,
        );
        if !out.status.success() {
            return Err(format!("warden.key_command failed ({})", out.status));
        }
        return parse_root_keys(&text).map_err(|e| format!("output of warden.key_command: {e}"));
    }
    Err(
        "no root key is configured; set warden.key_file (or warden.key_command) in postgresql.conf"
            .into(),
    )
}

/// The root keyring, or an error (55000) saying why there is none.
pub fn root() -> &'static RootKeyring {
    preload::require("encryption");
    match ROOT.get() {
        Some(Ok(ring)) => ring,
        // the reason names the key file and the OS error: for superusers
        // only, everyone else is told where to look
        Some(Err(why)) if unsafe { pgrx::pg_sys::superuser() } => WardenError::prerequisite(
            "the pg_warden root key is not loaded",
        )
        .detail(why.clone())
        .hint("Fix the key configuration and restart the server; the server log says the same.")
        .raise(),
        Some(Err(_)) => WardenError::prerequisite("the pg_warden root key is not loaded")
            .hint("Ask the database administrator: the server log says why.")
            .raise(),
        None => WardenError::prerequisite("the pg_warden root key is not loaded")
            .hint("Set warden.key_file in postgresql.conf and restart the server.")
            .raise(),
    }
}

/// Whether a root key was loaded (for the worker's start-up report).
pub fn loaded() -> Option<&'static RootKeyring> {
    ROOT.get().and_then(|r| r.as_ref().ok())
}
