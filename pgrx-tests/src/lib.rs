//! Harness for the integration tier: real PostgreSQL clusters (and a real
//! PgBouncer) started from outside, one per test, driven with the
//! `postgres` client crate. Clusters run as a non-root user (`postgres`
//! when the tests run as root) under `target/integration/`.
//!
//! Needs pg_warden installed in the system PostgreSQL (scripts/test does
//! that first) and, for PgBouncer tests, the `pgbouncer` binary.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub use postgres::{Client, NoTls};

pub const PG_MAJOR: &str = "15";

pub fn bindir() -> PathBuf {
    PathBuf::from(
        std::env::var("PG_BINDIR")
            .unwrap_or_else(|_| format!("/usr/lib/postgresql/{PG_MAJOR}/bin")),
    )
}

fn is_root() -> bool {
    // SAFETY: trivial libc call.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn run_as() -> Option<String> {
    is_root().then(|| std::env::var("PG_RUNAS").unwrap_or_else(|_| "postgres".into()))
}

/// A command run as the cluster user.
pub fn pg_command(program: impl AsRef<Path>) -> Command {
    match run_as() {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program.as_ref());
            c
        }
        None => Command::new(program.as_ref()),
    }
}

fn chown_to_pg(path: &Path) {
    if let Some(user) = run_as() {
        let ok = Command::new("chown")
            .arg("-R")
            .arg(&user)
            .arg(path)
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "chown {} to {user}", path.display());
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// 32 random bytes as 64 hex digits: a fresh root key.
pub fn random_key_hex() -> String {
    use std::io::Read;
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    hex(&key)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn target_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/integration");
    fs::create_dir_all(&d).unwrap();
    let d = d.canonicalize().unwrap();
    // the cluster user must be able to reach its directory
    if is_root() {
        let mut p = d.clone();
        loop {
            let _ = Command::new("chmod").arg("o+x").arg(&p).status();
            if !p.pop() || p.as_os_str() == "/" {
                break;
            }
        }
    }
    d
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// An empty directory of the cluster user's under target/integration.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = target_dir().join(format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    chown_to_pg(&dir);
    dir
}

/// A throwaway cluster with pg_warden preloaded; stopped (immediate) on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Fast timings so tests are quick; `extra` lines override them.
    pub fn start(name: &str, extra: &[&str]) -> Cluster {
        let dir = fresh_dir(name);
        let out = pg_command(bindir().join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_preload_libraries = 'pg_warden'\nmax_worker_processes = 16\n\
             warden.key_file = 'warden.key'\n\
             warden.enable_fault_injection = on\nwarden.worker_naptime = '200ms'\n\
             warden.launcher_naptime = '500ms'\nwarden.heartbeat_interval = '1h'\n\
             log_line_prefix = '%m [%p] %b '\n",
            dir.display()
        );
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = dir.join("data/postgresql.conf");
        let mut existing = fs::read_to_string(&conf_path).unwrap();
        existing.push_str(&conf);
        fs::write(&conf_path, existing).unwrap();
        let cluster = Cluster { dir, port };
        cluster.write_key_file(&format!("v1:{}\n", random_key_hex()));
        chown_to_pg(&cluster.dir);
        cluster.pg_ctl_start();
        cluster
    }

    /// `pg_ctl -D <data> <args>` as the cluster user, without Rust
    /// backtraces in the server's environment (they would end up in error
    /// details).
    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        pg_command(bindir().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    pub fn pg_ctl_start(&self) {
        let log = self.dir.join("server.log");
        let out = self.pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
        assert!(out.status.success(), "pg_ctl start failed:\n{}", self.log());
    }

    /// `pg_ctl stop -m <mode>`; returns how long it took.
    pub fn pg_ctl_stop(&self, mode: &str) -> Duration {
        let t = Instant::now();
        let out = self.pg_ctl(&["-m", mode, "-w", "-t", "120", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    }

    /// Replaces the root key file (mode 0600, owned by the cluster user);
    /// takes effect at the next start.
    pub fn write_key_file(&self, contents: &str) {
        let path = self.key_file();
        fs::write(&path, contents).unwrap();
        set_mode(&path, 0o600);
        chown_to_pg(&path);
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join("data/warden.key")
    }

    pub fn restart(&self) {
        self.pg_ctl_stop("fast");
        self.pg_ctl_start();
    }

    pub fn conn_str(&self, db: &str, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user={user} connect_timeout=10",
            self.port
        )
    }

    pub fn connect(&self, db: &str) -> Client {
        self.connect_as(db, "postgres")
    }

    pub fn connect_as(&self, db: &str, user: &str) -> Client {
        Client::connect(&self.conn_str(db, user), NoTls)
            .unwrap_or_else(|e| panic!("connect {db} as {user}: {e}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Asserts the server neither crashed nor restarted since `pid` was
    /// its postmaster: same postmaster, no backend killed by a signal in
    /// the log, no crash recovery, and it still answers.
    pub fn assert_survived(&self, pid: i32) {
        let log = self.log();
        for crash in [
            "terminated by signal",
            "was terminated by exception",
            "terminating any other active server processes",
            "database system was interrupted",
            "all server processes terminated; reinitializing",
        ] {
            assert!(!log.contains(crash), "the server crashed ({crash}):\n{log}");
        }
        assert_eq!(self.postmaster_pid(), pid, "the postmaster restarted");
        let one: i32 = self
            .connect("postgres")
            .query_one("SELECT 1", &[])
            .unwrap()
            .get(0);
        assert_eq!(one, 1);
    }

    /// Runs a client program of the cluster's installation (`pg_dump`,
    /// `pg_restore`, ...) as the cluster user against this cluster, as
    /// `postgres`, with `args` after the connection options.
    pub fn run_tool(&self, tool: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
        pg_command(bindir().join(tool))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// `pg_dump -Fc` of `db` into `file` in the cluster's directory;
    /// returns the dump's path.
    pub fn dump(&self, db: &str, file: &str) -> PathBuf {
        let dump = self.dir.join(file);
        let out = self.run_tool(
            "pg_dump",
            &["-Fc".as_ref(), "-f".as_ref(), dump.as_os_str(), db.as_ref()],
        );
        assert!(
            out.status.success(),
            "pg_dump failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dump
    }

    /// `pg_restore --single-transaction` of `dump` into the existing
    /// database `db` (the worker starts when all of it is there).
    pub fn restore_into(&self, dump: &Path, db: &str) {
        let out = self.run_tool(
            "pg_restore",
            &[
                "--single-transaction".as_ref(),
                "-d".as_ref(),
                db.as_ref(),
                dump.as_os_str(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_restore failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `CREATE EXTENSION pg_warden` in `postgres`, a login role
    /// `owner_role` in `warden_admin` and a schema `s` it owns; returns a
    /// superuser connection and one as `owner_role`.
    pub fn with_owner_schema(&self) -> (Client, Client) {
        let mut admin = self.connect("postgres");
        admin
            .batch_execute(
                "CREATE EXTENSION pg_warden;
                 CREATE ROLE owner_role LOGIN; GRANT warden_admin TO owner_role;
                 CREATE SCHEMA s AUTHORIZATION owner_role;",
            )
            .unwrap();
        let owner = self.connect_as("postgres", "owner_role");
        (admin, owner)
    }

    /// A streaming standby of this cluster made by `pg_basebackup -R`, and
    /// started: the backup copies the data directory, so it has this
    /// cluster's settings and key file; it gets a port and socket
    /// directory of its own, and `extra` settings.
    pub fn start_standby(&self, name: &str, extra: &[&str]) -> Cluster {
        let dir = fresh_dir(name);
        let out = pg_command(bindir().join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
            ])
            .arg(dir.join("data"))
            .args(["-R", "-X", "stream", "-c", "fast"])
            .output()
            .expect("pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let conf_path = dir.join("data/postgresql.conf");
        let mut conf = fs::read_to_string(&conf_path).unwrap();
        conf.push_str(&format!(
            "port = {port}\nunix_socket_directories = '{}'\n",
            dir.display()
        ));
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        fs::write(&conf_path, conf).unwrap();
        chown_to_pg(&dir);
        let standby = Cluster { dir, port };
        standby.pg_ctl_start();
        standby
    }

    /// `pg_ctl promote`, waiting until the standby accepts writes.
    pub fn promote(&self) {
        let out = self.pg_ctl(&["-w", "-t", "60", "promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The postmaster's pid, from postmaster.pid.
    pub fn postmaster_pid(&self) -> i32 {
        let s = fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap();
        s.lines().next().unwrap().trim().parse().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.dir.join("data/postmaster.pid").exists() {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` every 50 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        sleep(Duration::from_millis(50));
    }
}

/// One row of `warden.worker_status` for a database and task.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub state: String,
    pub pid: Option<i32>,
    pub starts: i64,
    pub wake_requests: i64,
    pub runs: Option<i64>,
    pub failures: Option<i64>,
    pub last_error: Option<String>,
}

/// The heartbeat row of `db`'s worker (or its task-less row), if any.
pub fn worker_row(client: &mut Client, db: &str) -> Option<WorkerRow> {
    client
        .query_opt(
            "SELECT state, pid, starts, wake_requests, runs, failures, last_error
               FROM warden.worker_status
              WHERE datname = $1 AND (task = 'heartbeat' OR task IS NULL)",
            &[&db],
        )
        .unwrap()
        .map(|r| WorkerRow {
            state: r.get(0),
            pid: r.get(1),
            starts: r.get(2),
            wake_requests: r.get(3),
            runs: r.get(4),
            failures: r.get(5),
            last_error: r.get(6),
        })
}

/// Waits until `db`'s worker is running and returns its row.
pub fn wait_running(client: &mut Client, db: &str) -> WorkerRow {
    wait_for(
        Duration::from_secs(20),
        &format!("a running worker in {db}"),
        || worker_row(client, db).filter(|r| r.state == "running" && r.runs.unwrap_or(0) > 0),
    )
}

/// Runs an ALTER SYSTEM and reloads the configuration (every backend
/// reads it at its next command; give them a moment).
pub fn reload_with(admin: &mut Client, alter_system: &str) {
    admin.batch_execute(alter_system).unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

/// Stops this cluster's worker for `postgres` (the launcher stops a
/// worker of a database `warden.databases` leaves out), or lets it run.
pub fn set_worker(admin: &mut Client, running: bool) {
    if running {
        reload_with(admin, "ALTER SYSTEM RESET warden.databases");
        wait_running(admin, "postgres");
    } else {
        reload_with(
            admin,
            "ALTER SYSTEM SET warden.databases = 'somewhere_else'",
        );
        wait_for(Duration::from_secs(20), "the worker to stop", || {
            let pids: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_warden worker'
                        AND datname = 'postgres'",
                    &[],
                )
                .unwrap()
                .get(0);
            (pids == 0).then_some(())
        });
    }
}

/// A PgBouncer in transaction pooling mode in front of a cluster, with a
/// single server connection per database/user pair, so clients are forced
/// to share a server backend.
pub struct PgBouncer {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    pub fn start(cluster: &Cluster, users: &[&str]) -> PgBouncer {
        let dir = cluster.dir.join("pgbouncer");
        fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let userlist: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        fs::write(dir.join("userlist.txt"), userlist).unwrap();
        fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = transaction\n\
                 default_pool_size = 1\nmax_client_conn = 50\nlogfile = {}\n",
                cluster.port,
                dir.join("userlist.txt").display(),
                dir.join("pgbouncer.log").display()
            ),
        )
        .unwrap();
        chown_to_pg(&dir);
        let bin = std::env::var("PGBOUNCER").unwrap_or_else(|_| "/usr/sbin/pgbouncer".into());
        let child = pg_command(bin)
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer (apt-get install pgbouncer)");
        let bouncer = PgBouncer { port, child, dir };
        wait_for(Duration::from_secs(10), "pgbouncer to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        bouncer
    }

    pub fn connect_as(&self, db: &str, user: &str) -> Client {
        let conn = format!(
            "host=127.0.0.1 port={} dbname={db} user={user} connect_timeout=10",
            self.port
        );
        Client::connect(&conn, NoTls).unwrap_or_else(|e| {
            panic!(
                "connect via pgbouncer: {e}\n{}",
                fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
            )
        })
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser forwards SIGTERM to pgbouncer
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The data the dump/restore, upgrade and standby tests carry over and
/// check on the other side: a tenant-isolated table `docs` (readable and
/// writable by role `app`) with one encrypted row, found by blind index,
/// for each of `DOC_TENANTS`; a synchronously tracked table `dim` and a
/// deferred one `ddim`, each with one row `(1, 'x')`. `admin` runs as a
/// superuser in a database with pg_warden; `app` as `app`.
pub const DOC_TENANTS: [&str; 2] = ["acme", "beta"];

pub fn write_every_subsystem(admin: &mut Client, app: &mut Client) {
    admin
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, tenant text NOT NULL, body bytea, email_idx bytea);
             SELECT warden.enable_tenancy('docs');
             GRANT SELECT, INSERT ON docs TO app;
             CREATE TABLE dim (id int PRIMARY KEY, v text);
             SELECT warden.scd2_track('dim', ARRAY['id']);
             INSERT INTO dim VALUES (1, 'x');
             CREATE TABLE ddim (id int PRIMARY KEY, v text);
             SELECT warden.scd2_track('ddim', ARRAY['id'], deferred => true);
             INSERT INTO ddim VALUES (1, 'x');",
        )
        .unwrap();
    for (id, tenant) in DOC_TENANTS.iter().enumerate() {
        app.batch_execute(&format!(
            "BEGIN; SELECT warden.set_tenant('{tenant}');
             INSERT INTO docs (id, body, email_idx)
               VALUES ({}, warden.encrypt('secret of {tenant}', 'docs.body'), warden.blind_index('{tenant}@example.com', 'email'));
             COMMIT;",
            id + 1
        ))
        .unwrap();
    }
}

/// In `tx`, as `tenant`: its row decrypts and is found by its blind
/// index, and no other tenant's row is visible.
pub fn assert_tenant_reads_its_row(tx: &mut postgres::Transaction, tenant: &str, what: &str) {
    tx.execute("SELECT warden.set_tenant($1)", &[&tenant])
        .unwrap();
    let plain: Vec<String> = tx
        .query(
            "SELECT warden.decrypt_text(body, 'docs.body') FROM docs
              WHERE email_idx = warden.blind_index($1, 'email')",
            &[&format!("{tenant}@example.com")],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        plain,
        [format!("secret of {tenant}")],
        "{what}: {tenant}'s row"
    );
    let visible: i64 = tx
        .query_one("SELECT count(*) FROM docs", &[])
        .unwrap()
        .get(0);
    assert_eq!(visible, 1, "{what}: {tenant} sees another tenant's rows");
}

/// Tracking goes on: an update of `dim` and of `ddim` (flushed) each
/// make a new version after the one `write_every_subsystem` made.
pub fn assert_tracking_goes_on(admin: &mut Client, what: &str) {
    admin
        .batch_execute(
            "UPDATE dim SET v = 'y';
             UPDATE ddim SET v = 'y';
             SELECT warden.scd2_flush('ddim');",
        )
        .unwrap();
    for history in ["dim_history", "ddim_history"] {
        let versions: Vec<String> = admin
            .query(
                &format!(
                    "SELECT v || ' ' || is_current FROM {history} ORDER BY valid_from, is_current"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, ["x false", "y true"], "{what}: {history}");
    }
}

/// `kill -9` of a server process (the postmaster then restarts every
/// process: crash recovery).
pub fn kill9(pid: i32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn crash_restarts(cluster: &Cluster) -> usize {
    cluster
        .log()
        .matches("all server processes terminated; reinitializing")
        .count()
}

/// Connects once the server restarted after the crash number `restarts`
/// (until the postmaster notices the crash, a connection still reaches
/// the old processes, and is reset).
pub fn reconnect(cluster: &Cluster, restarts: usize) -> Client {
    wait_for(Duration::from_secs(60), "the crash restart", || {
        (crash_restarts(cluster) >= restarts).then_some(())
    });
    wait_for(Duration::from_secs(60), "the server to come back", || {
        let mut c = Client::connect(&cluster.conn_str("postgres", "postgres"), NoTls).ok()?;
        c.batch_execute("SELECT 1").ok()?;
        Some(c)
    })
}

/// Waits until the worker of database `postgres` runs `task`, and
/// returns the worker's pid (to kill it mid-run).
pub fn wait_task_running(client: &mut Client, task: &str) -> i32 {
    let activity = format!("pg_warden: {task} run");
    wait_for(Duration::from_secs(20), &format!("{task} to run"), || {
        client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_warden worker'
                    AND datname = 'postgres' AND query = $1",
                &[&activity],
            )
            .unwrap()
            .map(|r| r.get::<_, i32>(0))
    })
}
