//! The embedded default database: when no `DATABASE_URL` is given, custodian runs its own
//! private PostgreSQL cluster in a data directory chosen by the caller (`./var/pg` by
//! default).
//!
//! The cluster listens only on a Unix socket inside its data directory (`listen_addresses
//! = ''`, socket mode 0700), so it takes no TCP port and only the directory's owner (and
//! root) can reach it. That privacy is what makes `--auth=trust` acceptable here.
//!
//! The listening settings live in `custodian.conf`, rewritten on every start and included
//! from `postgresql.conf`, rather than being passed with `pg_ctl -o`: `pg_ctl` hands `-o`
//! to a shell, so a data directory path with spaces or quotes would need shell quoting;
//! the settings also stay in force when someone starts the cluster by hand with `pg_ctl`,
//! and rewriting them each start keeps the socket path right if the directory is moved.
//!
//! The postmaster outlives this process (`pg_ctl` puts it in its own session). A later
//! start, or a second process, finds it through `postmaster.pid` and reuses it; only the
//! handle that owns the server stops it. The owner is the handle that started it, recorded
//! in `custodian.owner` with the server's pid; when that process is gone (it crashed, or was
//! killed) the next start takes the server over and stops it in its turn, so a server left
//! behind does not run on forever. [`StopOnDrop`] makes every exit of an owner stop it.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{geteuid, Gid, Pid, Uid, User};
use sqlx::postgres::PgConnectOptions;
use tokio::process::Command;

/// The superuser initdb creates; every connection logs in as this role.
const SUPERUSER: &str = "postgres";
/// The system account PostgreSQL runs as when custodian itself runs as root.
const SYSTEM_USER: &str = "postgres";
/// Only names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const PORT: u16 = 5432;
/// `sun_path` holds 108 bytes including the terminating NUL.
const SOCKET_PATH_MAX: usize = 107;
const MANAGED_CONF: &str = "custodian.conf";
/// Which custodian process owns (and will stop) the running server; see the module docs.
const OWNER_FILE: &str = "custodian.owner";
const INCLUDE_LINE: &str = "include_if_exists = 'custodian.conf'";
const INSTALL_SCRIPT: &str = "scripts/install-postgres.sh";
/// Crash recovery after an unclean stop can take a while on a big cluster.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "the embedded database needs the PostgreSQL server with the pgvector extension, but {missing}. \
         Install them with `sudo {INSTALL_SCRIPT}`, or set DATABASE_URL to a PostgreSQL server \
         that has pgvector"
    )]
    NotInstalled { missing: String },

    #[error(
        "custodian is running as root, and PostgreSQL refuses to run as root, so the embedded \
         database has to run as the `{SYSTEM_USER}` system user, which does not exist on this \
         machine. Run custodian as an ordinary user, install the server with \
         `sudo {INSTALL_SCRIPT}` (its package creates that user), or set DATABASE_URL"
    )]
    NoUnprivilegedUser,

    #[error(
        "the embedded database runs as the `{user}` user (custodian is running as root), and \
         that user cannot enter {blocked}, so it cannot reach the database directory \
         {data_dir}. Choose a data directory that user can reach, e.g. \
         `--data-dir /var/lib/custodian` or `CUSTODIAN_DATA_DIR=/var/lib/custodian` (the \
         database goes into its `pg` subdirectory), or let it through with \
         `chmod o+x {blocked}`"
    )]
    DataDirUnreachable {
        user: String,
        data_dir: PathBuf,
        blocked: PathBuf,
    },

    #[error(
        "the data directory path {path} is too long ({len} bytes): PostgreSQL puts its Unix \
         socket inside it and socket paths are limited to {SOCKET_PATH_MAX} bytes, so the \
         directory path can be at most {max} bytes. Choose a shorter `--data-dir` / \
         `CUSTODIAN_DATA_DIR` (the database goes into its `pg` subdirectory)"
    )]
    DataDirPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },

    #[error(
        "the data directory path {path} is not valid UTF-8; choose another `--data-dir` / \
         `CUSTODIAN_DATA_DIR`"
    )]
    DataDirNotUtf8 { path: PathBuf },

    #[error(
        "the database directory {path} is not empty but holds no PostgreSQL cluster (no \
         PG_VERSION file). Move its contents away, or choose another `--data-dir` / \
         `CUSTODIAN_DATA_DIR` (the database goes into its `pg` subdirectory, which must be \
         missing, empty, or a cluster custodian created before)"
    )]
    NotACluster { path: PathBuf },

    #[error(
        "the cluster in {data_dir} was created by PostgreSQL {cluster}, but the installed server \
         is PostgreSQL {installed}. Upgrade the cluster with pg_upgrade, or use another \
         `--data-dir` / `CUSTODIAN_DATA_DIR` (a new cluster starts empty)"
    )]
    VersionMismatch {
        data_dir: PathBuf,
        cluster: String,
        installed: String,
    },

    #[error("PostgreSQL did not start ({detail}). Last lines of {log}:\n{tail}")]
    StartFailed {
        detail: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "a PostgreSQL server (pid {pid}) is running on {data_dir} but did not become ready \
         within {secs} s; see {data_dir}/server.log",
        secs = START_TIMEOUT.as_secs()
    )]
    NotReady { pid: i32, data_dir: PathBuf },

    #[error(
        "the PostgreSQL server running on {data_dir} has no Unix socket \
         (unix_socket_directories is empty), so custodian cannot connect to it; stop it with \
         `pg_ctl stop -D {data_dir}` and start custodian again"
    )]
    NoSocket { data_dir: PathBuf },

    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },

    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}

/// A running private PostgreSQL cluster, reached over its Unix socket.
#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    started_here: bool,
    /// Whether `stop` stops the server: this handle started it, or took it over from a
    /// process of ours that ended without stopping it.
    owned: bool,
    runner: Runner,
}

impl EmbeddedPostgres {
    /// Creates the cluster on first use, then starts it, or reuses the server already
    /// running on `data_dir`. The server binaries are found through `pg_config --bindir`
    /// or `/usr/lib/postgresql/*/bin`.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        Self::start_with(data_dir, None).await
    }

    /// [`start`](Self::start), with the server binaries taken from `bin_dir` alone when given.
    #[tracing::instrument(skip_all, fields(data_dir = %data_dir.display()))]
    pub async fn start_with(
        data_dir: &Path,
        bin_dir: Option<&Path>,
    ) -> Result<Self, EmbeddedError> {
        let installation = Installation::find(bin_dir).await?;
        let runner = Runner::new().await?;
        // Held until start returns: two processes starting on one directory at once
        // would otherwise both run initdb, or both pg_ctl start.
        let (data_dir, state, _lock) = prepare_data_dir(data_dir, &runner).await?;

        match state {
            DirState::Empty => initdb(&installation, &data_dir, &runner).await?,
            DirState::Cluster { version } if version != installation.major => {
                return Err(EmbeddedError::VersionMismatch {
                    data_dir,
                    cluster: version,
                    installed: installation.major,
                });
            }
            DirState::Cluster { .. } => {}
        }
        write_managed_config(&data_dir, &runner).await?;

        let mut cluster = Self {
            data_dir,
            bin_dir: installation.bin_dir,
            socket_dir: PathBuf::new(),
            port: PORT,
            started_here: false,
            owned: false,
            runner,
        };
        cluster.started_here = cluster.ensure_running().await?;

        let pid_file =
            read_pid_file(&cluster.data_dir)
                .await?
                .ok_or_else(|| EmbeddedError::StartFailed {
                    detail: "postmaster.pid vanished right after start".into(),
                    log: cluster.log_path(),
                    tail: log_tail(&cluster.log_path()),
                })?;
        let socket_dir = pid_file.socket_dir.ok_or_else(|| EmbeddedError::NoSocket {
            data_dir: cluster.data_dir.clone(),
        })?;
        cluster.socket_dir = cluster.data_dir.join(socket_dir);
        cluster.port = pid_file.port.unwrap_or(PORT);

        cluster.owned = cluster.started_here || {
            let orphan = Owner::read(&cluster.data_dir)
                .is_some_and(|owner| owner.postmaster == pid_file.pid && !owner.is_alive());
            if orphan {
                tracing::info!(
                    pid = pid_file.pid,
                    "taking over the PostgreSQL server left running by a custodian process \
                     that ended without stopping it; it stops when we stop"
                );
            }
            orphan
        };
        if cluster.owned {
            Owner::this_process(pid_file.pid)
                .write(&cluster.data_dir, &cluster.runner)
                .await?;
        }
        Ok(cluster)
    }

    /// A URL for `database`, e.g. `postgres://postgres@%2Fsrv%2Fvar%2Fpg:5432/custodian`.
    /// sqlx and libpq both read a percent-encoded host starting with `/` as a socket
    /// directory.
    pub fn connection_url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{}:{}/{}",
            percent_encode(&self.socket_dir.to_string_lossy()),
            self.port,
            percent_encode(database)
        )
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(self.port)
            .username(SUPERUSER)
            .database(database)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Whether this handle started the server (rather than reusing one already running).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Whether [`stop`](Self::stop) stops the server: this handle started it, or took it
    /// over because the custodian process that started it is gone.
    pub fn owns_server(&self) -> bool {
        self.owned
    }

    /// Stops the server with a fast shutdown, but only if this handle owns it: a server
    /// that another live process started belongs to that process.
    #[tracing::instrument(skip_all, fields(data_dir = %self.data_dir.display()))]
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        if !self.owned {
            tracing::info!("leaving PostgreSQL running: another process started it");
            return Ok(());
        }
        // Not while another process is starting on this directory and may be taking it over.
        let _lock = DirLock::acquire(&self.data_dir).await?;
        if Owner::taken_by_another(&self.data_dir) {
            tracing::info!("leaving PostgreSQL running: another process owns it now");
            return Ok(());
        }
        if read_pid_file(&self.data_dir).await?.is_some() {
            tracing::info!("stopping PostgreSQL");
            let args = self.stop_args();
            let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            let result = self.runner.run(&self.bin_dir.join("pg_ctl"), &args).await;
            match result {
                // Someone else stopped it in the meantime: the goal is reached.
                Err(_) if read_pid_file(&self.data_dir).await?.is_none() => {}
                other => other.map(drop)?,
            }
        }
        Owner::remove(&self.data_dir);
        Ok(())
    }

    /// [`stop`](Self::stop) for places that cannot await (a drop); failures are logged.
    fn stop_blocking(&self) {
        if !self.owned {
            return;
        }
        let _lock = DirLock::acquire_blocking(&self.data_dir);
        if Owner::taken_by_another(&self.data_dir) {
            return;
        }
        if self.data_dir.join("postmaster.pid").exists() {
            tracing::info!(data_dir = %self.data_dir.display(), "stopping PostgreSQL");
            let output = self
                .runner
                .std_command(self.bin_dir.join("pg_ctl"))
                .args(self.stop_args())
                .output();
            match output {
                Ok(output) if output.status.success() => {}
                Ok(output) => tracing::error!(
                    status = %output.status,
                    stderr = %String::from_utf8_lossy(&output.stderr).trim(),
                    "pg_ctl stop failed"
                ),
                Err(error) => tracing::error!(%error, "could not run pg_ctl stop"),
            }
        }
        Owner::remove(&self.data_dir);
    }

    fn stop_args(&self) -> Vec<std::ffi::OsString> {
        let timeout = STOP_TIMEOUT.as_secs().to_string();
        ["stop", "-w", "-t", &timeout, "-m", "fast", "-D"]
            .into_iter()
            .map(Into::into)
            .chain([self.data_dir.clone().into_os_string()])
            .collect()
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    /// Returns true if this call started the server, false if it reused a running one.
    async fn ensure_running(&self) -> Result<bool, EmbeddedError> {
        // A few rounds cover the races: a server that stops while we wait for it, or a
        // second process that starts the server just before we do.
        for _ in 0..3 {
            if let Some(pid) = self.live_postmaster().await? {
                if self.wait_until_ready(pid).await? {
                    tracing::info!(pid, "reusing the PostgreSQL server already running");
                    return Ok(false);
                }
                continue;
            }
            match self.pg_ctl_start().await {
                Ok(()) => return Ok(true),
                // Lost the race to another process: its server is the one to reuse.
                Err(_) if self.live_postmaster().await?.is_some() => continue,
                Err(error) => return Err(error),
            }
        }
        Err(EmbeddedError::StartFailed {
            detail: "a server on this data directory kept starting and stopping while we waited"
                .into(),
            log: self.log_path(),
            tail: log_tail(&self.log_path()),
        })
    }

    /// The pid of a live postmaster on this data directory. Lock files left by a dead one
    /// are removed here, since the postmaster only clears them itself when their pid is
    /// free, not when a recycled pid now belongs to some other process.
    async fn live_postmaster(&self) -> Result<Option<i32>, EmbeddedError> {
        let Some(pid_file) = read_pid_file(&self.data_dir).await? else {
            return Ok(None);
        };
        if is_live_postgres(pid_file.pid) {
            return Ok(Some(pid_file.pid));
        }
        tracing::info!(
            pid = pid_file.pid,
            "removing the stale postmaster.pid of a server that is gone"
        );
        for name in [
            "postmaster.pid".to_string(),
            format!(".s.PGSQL.{PORT}.lock"),
        ] {
            let path = self.data_dir.join(name);
            match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error("remove stale lock file", &path)(e));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Waits for a postmaster found running to accept connections. False if it went away.
    async fn wait_until_ready(&self, pid: i32) -> Result<bool, EmbeddedError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match read_pid_file(&self.data_dir).await? {
                Some(f) if f.pid == pid && is_live_postgres(pid) => {
                    if f.status.as_deref() == Some("ready") {
                        return Ok(true);
                    }
                }
                _ => return Ok(false),
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedError::NotReady {
                    pid,
                    data_dir: self.data_dir.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        tracing::info!("starting PostgreSQL");
        let log = self.log_path();
        let timeout = START_TIMEOUT.as_secs().to_string();
        self.runner
            .run(
                &self.bin_dir.join("pg_ctl"),
                &[
                    "start".as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    timeout.as_ref(),
                    "-D".as_ref(),
                    self.data_dir.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                ],
            )
            .await
            .map(drop)
            .map_err(|error| EmbeddedError::StartFailed {
                detail: error.to_string(),
                tail: log_tail(&log),
                log,
            })
    }
}

/// The PostgreSQL server binaries to use, and their major version.
#[derive(Debug)]
struct Installation {
    bin_dir: PathBuf,
    major: String,
}

impl Installation {
    async fn find(chosen: Option<&Path>) -> Result<Self, EmbeddedError> {
        let candidates = match chosen {
            Some(dir) => vec![dir.to_path_buf()],
            None => {
                let path_pg_config = pg_config(Path::new("pg_config"), &["--bindir"]).await;
                let from_pg_config = path_pg_config
                    .as_ref()
                    .and_then(|lines| lines.first())
                    .map(PathBuf::from);
                from_pg_config
                    .into_iter()
                    .chain(debian_bin_dirs())
                    .collect()
            }
        };
        // Debian's /usr/bin/pg_config can belong to libpq-dev alone and then names
        // /usr/bin, which has no initdb: only a directory with the server binaries counts.
        let bin_dir = candidates
            .into_iter()
            .find(|dir| {
                ["initdb", "pg_ctl", "postgres"]
                    .iter()
                    .all(|b| dir.join(b).is_file())
            })
            .ok_or_else(|| EmbeddedError::NotInstalled {
                missing: match chosen {
                    Some(dir) => format!(
                        "the PostgreSQL server binaries (initdb, pg_ctl, postgres) are not in {} \
                         (CUSTODIAN_PG_BINDIR)",
                        dir.display()
                    ),
                    None => "no PostgreSQL server binaries (initdb, pg_ctl, postgres) were found \
                             (looked in `pg_config --bindir` and /usr/lib/postgresql/*/bin)"
                        .into(),
                },
            })?;

        let version = Command::new(bin_dir.join("postgres"))
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io_error("run", &bin_dir.join("postgres")))?;
        let version = String::from_utf8_lossy(&version.stdout);
        let major = major_version(&version).ok_or_else(|| EmbeddedError::NotInstalled {
            missing: format!(
                "{} printed an unrecognised version ({:?})",
                bin_dir.join("postgres").display(),
                version.trim()
            ),
        })?;
        tracing::debug!(bin_dir = %bin_dir.display(), %major, "found PostgreSQL");

        let installation = Self { bin_dir, major };
        installation.check_pgvector().await?;
        Ok(installation)
    }

    /// Checked before anything is created or started, so a missing pgvector leaves no
    /// half-made cluster or orphan server behind.
    async fn check_pgvector(&self) -> Result<(), EmbeddedError> {
        let (share_dirs, lib_dirs) = self.candidate_dirs().await;
        // plpgsql ships with every server, so it tells the real directories apart from
        // guesses that merely exist.
        let share_dir = share_dirs
            .into_iter()
            .find(|dir| dir.join("extension/plpgsql.control").is_file());
        let lib_dir = lib_dirs
            .into_iter()
            .find(|dir| dir.join("plpgsql.so").is_file());
        let (Some(share_dir), Some(lib_dir)) = (share_dir, lib_dir) else {
            return Err(EmbeddedError::NotInstalled {
                missing: format!(
                    "the extension directories of PostgreSQL {} (in {}) were not found",
                    self.major,
                    self.bin_dir.display()
                ),
            });
        };
        let control = share_dir.join("extension/vector.control");
        let library = lib_dir.join("vector.so");
        for file in [&control, &library] {
            if !file.is_file() {
                return Err(EmbeddedError::NotInstalled {
                    missing: format!(
                        "the pgvector extension is not installed for PostgreSQL {} ({} is missing)",
                        self.major,
                        file.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Where the server's share and library directories may be, best guess first: the
    /// `pg_config` next to the binaries, the one on PATH if it describes these binaries,
    /// Debian's layout, then a plain `<prefix>/bin` install.
    async fn candidate_dirs(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut share = Vec::new();
        let mut lib = Vec::new();
        let args = ["--bindir", "--sharedir", "--pkglibdir"];
        for program in [self.bin_dir.join("pg_config"), PathBuf::from("pg_config")] {
            match pg_config(&program, &args).await.as_deref() {
                Some([bin, sharedir, pkglibdir]) if same_dir(Path::new(bin), &self.bin_dir) => {
                    share.push(PathBuf::from(sharedir));
                    lib.push(PathBuf::from(pkglibdir));
                }
                _ => {}
            }
        }
        share.push(Path::new("/usr/share/postgresql").join(&self.major));
        lib.push(
            Path::new("/usr/lib/postgresql")
                .join(&self.major)
                .join("lib"),
        );
        if let Some(prefix) = self.bin_dir.parent() {
            share.extend([prefix.join("share/postgresql"), prefix.join("share")]);
            lib.extend([prefix.join("lib/postgresql"), prefix.join("lib")]);
        }
        (share, lib)
    }
}

/// `/usr/lib/postgresql/*/bin`, highest version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let key = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((key, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Runs a `pg_config`, one output line per argument; None if it is absent or fails.
async fn pg_config(program: &Path, args: &[&str]) -> Option<Vec<String>> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_string())
        .collect();
    (lines.len() == args.len()).then_some(lines)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)" → "15"; 9.x → "9.6". This is
/// the form the PG_VERSION file of a cluster uses.
fn major_version(version_output: &str) -> Option<String> {
    let version = version_output
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let first: u32 = numbers.next()?.parse().ok()?;
    if first >= 10 {
        Some(first.to_string())
    } else {
        Some(format!("{first}.{}", numbers.next()?))
    }
}

/// Runs the PostgreSQL tools as the right user, in an environment they work in.
#[derive(Debug, Clone)]
struct Runner {
    run_as: Option<SystemUser>,
    locale: &'static str,
}

#[derive(Debug, Clone)]
struct SystemUser {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

impl Runner {
    async fn new() -> Result<Self, EmbeddedError> {
        let run_as = if geteuid().is_root() {
            let user = User::from_name(SYSTEM_USER)
                .map_err(|errno| EmbeddedError::Io {
                    action: "look up the system user",
                    path: SYSTEM_USER.into(),
                    source: errno.into(),
                })?
                .filter(|user| !user.uid.is_root())
                .ok_or(EmbeddedError::NoUnprivilegedUser)?;
            Some(SystemUser {
                name: user.name,
                uid: user.uid,
                gid: user.gid,
                home: user.dir,
            })
        } else {
            None
        };
        Ok(Self {
            run_as,
            locale: child_locale().await,
        })
    }

    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command::from(self.std_command(program))
    }

    fn std_command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(program);
        // Inherited locale settings name locales that minimal machines lack, and initdb
        // fails on them; PG* variables (PGDATA, PGPORT...) would override our arguments.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("LC_")
                || key_text == "LANG"
                || key_text == "LANGUAGE"
                || key_text.starts_with("PG")
            {
                command.env_remove(&key);
            }
        }
        command
            .env("LC_ALL", self.locale)
            .current_dir("/")
            .stdin(Stdio::null());
        if let Some(user) = &self.run_as {
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
        command
    }

    /// Runs to completion; a non-zero exit is an error carrying the tool's own output.
    async fn run(&self, program: &Path, args: &[&OsStr]) -> Result<Output, EmbeddedError> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .await
            .map_err(io_error("run", program))?;
        if output.status.success() {
            return Ok(output);
        }
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if text.is_empty() {
            text = stdout.trim().to_string();
        }
        let name = program.file_name().unwrap_or(program.as_os_str());
        let args = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        Err(EmbeddedError::CommandFailed {
            command: format!("{} {args}", name.to_string_lossy()),
            status: output.status.to_string(),
            output: text,
        })
    }
}

/// C.UTF-8 keeps initdb's UTF8 encoding and works without generated locales wherever
/// glibc ships it; plain C is the fallback that exists everywhere.
async fn child_locale() -> &'static str {
    let listed = Command::new("locale")
        .arg("-a")
        .stdin(Stdio::null())
        .output()
        .await;
    match listed {
        Ok(output)
            if String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|l| l.eq_ignore_ascii_case("C.UTF-8") || l.eq_ignore_ascii_case("C.utf8")) =>
        {
            "C.UTF-8"
        }
        _ => "C",
    }
}

enum DirState {
    Empty,
    Cluster { version: String },
}

/// Makes the data directory exist, be absolute, be owned by the user the server runs as
/// and be reachable by that user; reports whether it already holds a cluster.
async fn prepare_data_dir(
    requested: &Path,
    runner: &Runner,
) -> Result<(PathBuf, DirState, DirLock), EmbeddedError> {
    let absolute = std::path::absolute(requested).map_err(io_error("resolve", requested))?;
    check_socket_path(&absolute)?;
    tokio::fs::create_dir_all(&absolute)
        .await
        .map_err(io_error("create the data directory", &absolute))?;
    let data_dir = tokio::fs::canonicalize(&absolute)
        .await
        .map_err(io_error("resolve", &absolute))?;
    check_socket_path(&data_dir)?;
    let lock = DirLock::acquire(&data_dir).await?;

    let version_file = data_dir.join("PG_VERSION");
    let state = match tokio::fs::read_to_string(&version_file).await {
        Ok(version) => DirState::Cluster {
            version: version.trim().to_string(),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut entries = tokio::fs::read_dir(&data_dir)
                .await
                .map_err(io_error("read the data directory", &data_dir))?;
            let first = entries
                .next_entry()
                .await
                .map_err(io_error("read the data directory", &data_dir))?;
            if first.is_some() {
                // Checked before any chown below, so a mistyped path never hands a
                // directory full of someone's files to the postgres user.
                return Err(EmbeddedError::NotACluster { path: data_dir });
            }
            DirState::Empty
        }
        Err(e) => return Err(io_error("read", &version_file)(e)),
    };

    let metadata = tokio::fs::metadata(&data_dir)
        .await
        .map_err(io_error("inspect the data directory", &data_dir))?;
    if let Some(user) = &runner.run_as {
        check_reachable(&data_dir, user, runner).await?;
        if metadata.uid() != user.uid.as_raw() {
            let (dir, uid, gid) = (data_dir.clone(), user.uid.as_raw(), user.gid.as_raw());
            tokio::task::spawn_blocking(move || chown_tree(&dir, uid, gid))
                .await
                .expect("chown task panicked")
                .map_err(io_error(
                    "give the data directory to the postgres user",
                    &data_dir,
                ))?;
        }
    }
    // The server refuses a data directory that others can read (0750 is its limit).
    if metadata.mode() & 0o027 != 0 {
        tokio::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(io_error("restrict the permissions of", &data_dir))?;
    }
    Ok((data_dir, state, lock))
}

/// An advisory lock (flock) on the data directory itself, released on drop. PostgreSQL
/// takes no flock, so this only serialises custodian processes.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    async fn acquire(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::lock(&dir))
            .await
            .expect("lock task panicked")
            .map_err(io_error("lock the data directory", data_dir))
    }

    /// Best effort, for a drop: without the lock the stop goes ahead all the same.
    fn acquire_blocking(data_dir: &Path) -> Option<Self> {
        Self::lock(data_dir).ok()
    }

    fn lock(dir: &Path) -> io::Result<Self> {
        let file = std::fs::File::open(dir)?;
        if file.try_lock().is_err() {
            tracing::info!(
                "waiting for another process that is starting or stopping this database"
            );
            file.lock()?;
        }
        Ok(Self { _file: file })
    }
}

fn check_socket_path(data_dir: &Path) -> Result<(), EmbeddedError> {
    let Some(text) = data_dir.to_str() else {
        return Err(EmbeddedError::DataDirNotUtf8 {
            path: data_dir.to_path_buf(),
        });
    };
    let socket_name_len = format!("/.s.PGSQL.{PORT}").len();
    let max = SOCKET_PATH_MAX - socket_name_len;
    if text.len() > max {
        return Err(EmbeddedError::DataDirPathTooLong {
            path: data_dir.to_path_buf(),
            len: text.len(),
            max,
        });
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Asks the system, as the server's user, to enter every ancestor of the data directory
/// (the directory itself is handed to that user next): this honours ACLs and uses exactly
/// the credentials initdb and pg_ctl will have.
async fn check_reachable(
    data_dir: &Path,
    user: &SystemUser,
    runner: &Runner,
) -> Result<(), EmbeddedError> {
    let mut ancestors: Vec<&Path> = data_dir.ancestors().skip(1).collect();
    ancestors.reverse();
    let output = runner
        .command("/bin/sh")
        .arg("-c")
        .arg(r#"for d do [ -x "$d" ] || { printf '%s' "$d"; exit 1; }; done"#)
        .arg("sh")
        .args(&ancestors)
        .output()
        .await
        .map_err(io_error("run", Path::new("/bin/sh")))?;
    if output.status.success() {
        return Ok(());
    }
    let blocked = String::from_utf8_lossy(&output.stdout).into_owned();
    Err(EmbeddedError::DataDirUnreachable {
        user: user.name.clone(),
        data_dir: data_dir.to_path_buf(),
        blocked: if blocked.is_empty() {
            data_dir.to_path_buf()
        } else {
            blocked.into()
        },
    })
}

async fn initdb(
    installation: &Installation,
    data_dir: &Path,
    runner: &Runner,
) -> Result<(), EmbeddedError> {
    tracing::info!(major = %installation.major, "creating a new PostgreSQL cluster");
    let locale = format!("--locale={}", runner.locale);
    runner
        .run(
            &installation.bin_dir.join("initdb"),
            &[
                "-D".as_ref(),
                data_dir.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                locale.as_ref(),
                // Acceptable only because the socket is private (see module docs).
                "--auth=trust".as_ref(),
            ],
        )
        .await?;
    Ok(())
}

/// Writes the listening settings and makes sure postgresql.conf includes them. Settings
/// made with ALTER SYSTEM still win, as postgresql.auto.conf is read last.
async fn write_managed_config(data_dir: &Path, runner: &Runner) -> Result<(), EmbeddedError> {
    let socket_dir = data_dir
        .to_str()
        .expect("checked to be UTF-8 in check_socket_path");
    let managed = format!(
        "# Written by custodian on every start of the embedded database; edits here are lost.\n\
         # Private: no TCP, a Unix socket only its owner can use.\n\
         listen_addresses = ''\n\
         port = {PORT}\n\
         unix_socket_directories = '{}'\n\
         unix_socket_permissions = 0700\n",
        conf_escape(socket_dir)
    );
    let managed_path = data_dir.join(MANAGED_CONF);
    tokio::fs::write(&managed_path, managed)
        .await
        .map_err(io_error("write", &managed_path))?;

    let main_path = data_dir.join("postgresql.conf");
    let main = tokio::fs::read_to_string(&main_path)
        .await
        .map_err(io_error("read", &main_path))?;
    if !main.lines().any(|line| line.trim() == INCLUDE_LINE) {
        let mut updated = main;
        if !updated.ends_with('\n') {
            updated.push('\n');
        }
        updated.push_str("\n# Listening settings managed by custodian.\n");
        updated.push_str(INCLUDE_LINE);
        updated.push('\n');
        tokio::fs::write(&main_path, updated)
            .await
            .map_err(io_error("write", &main_path))?;
    }

    if let Some(user) = &runner.run_as {
        for path in [&managed_path, &main_path] {
            std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(io_error("give to the postgres user", path))?;
        }
    }
    Ok(())
}

/// Quoting for a postgresql.conf string value, where backslash escapes are processed.
fn conf_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// The parts of postmaster.pid we use. Its lines are: pid, data directory, start time,
/// port, first socket directory, listen address, shared memory key, status.
struct PidFile {
    pid: i32,
    port: Option<u16>,
    socket_dir: Option<PathBuf>,
    status: Option<String>,
}

async fn read_pid_file(data_dir: &Path) -> Result<Option<PidFile>, EmbeddedError> {
    let path = data_dir.join("postmaster.pid");
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // A pid file caught half-written counts as present but not ready yet; a negative pid
    // marks a single-user backend, which holds the directory just the same.
    let pid = lines
        .first()
        .and_then(|l| l.parse::<i32>().ok())
        .map_or(0, i32::abs);
    let field = |index: usize| lines.get(index).copied().filter(|value| !value.is_empty());
    Ok(Some(PidFile {
        pid,
        port: field(3).and_then(|p| p.parse().ok()),
        socket_dir: field(4).map(PathBuf::from),
        status: field(7).map(str::to_string),
    }))
}

/// A pid file can outlive its server (crash, power loss), and after a reboot its pid may
/// belong to an unrelated process, so a live pid alone is not enough. A killed postmaster
/// also lingers as a zombie until its parent (often pid 1) reaps it.
fn is_live_postgres(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    // /proc/<pid>/stat reads "<pid> (<comm>) <state> ...".
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // Without /proc, trust the live pid rather than delete a running server's lock.
        return true;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return true;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    comm == "postgres" && !matches!(state, Some('Z' | 'X'))
}

/// The custodian process that owns the running server, as recorded in `custodian.owner`:
/// its pid and start time (so a recycled pid is not mistaken for it) and the server's pid.
struct Owner {
    pid: i32,
    start_time: Option<u64>,
    postmaster: i32,
}

impl Owner {
    fn this_process(postmaster: i32) -> Self {
        let pid = std::process::id() as i32;
        Owner {
            pid,
            start_time: process_start_time(pid),
            postmaster,
        }
    }

    fn read(data_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(data_dir.join(OWNER_FILE)).ok()?;
        let mut numbers = text.split_whitespace();
        let pid = numbers.next()?.parse().ok()?;
        let start_time = match numbers.next()? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let postmaster = numbers.next()?.parse().ok()?;
        Some(Owner {
            pid,
            start_time,
            postmaster,
        })
    }

    async fn write(&self, data_dir: &Path, runner: &Runner) -> Result<(), EmbeddedError> {
        let path = data_dir.join(OWNER_FILE);
        let start = self
            .start_time
            .map_or_else(|| "-".to_string(), |t| t.to_string());
        tokio::fs::write(&path, format!("{} {start} {}\n", self.pid, self.postmaster))
            .await
            .map_err(io_error("write", &path))?;
        // Everything in the data directory belongs to the server's user.
        if let Some(user) = &runner.run_as {
            std::os::unix::fs::chown(&path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(io_error("give to the postgres user", &path))?;
        }
        Ok(())
    }

    fn remove(data_dir: &Path) {
        let _ = std::fs::remove_file(data_dir.join(OWNER_FILE));
    }

    /// Whether another process has become the owner since we did: the server we started
    /// stopped, and that process started a new one, which is not ours to stop.
    fn taken_by_another(data_dir: &Path) -> bool {
        Owner::read(data_dir).is_some_and(|owner| owner.pid != std::process::id() as i32)
    }

    fn is_alive(&self) -> bool {
        match kill(Pid::from_raw(self.pid), None) {
            Ok(()) | Err(Errno::EPERM) => {}
            Err(_) => return false,
        }
        // A live pid with another start time is some later process that got the number.
        match (self.start_time, process_start_time(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        }
    }
}

/// When a process started, in clock ticks since boot (`/proc/<pid>/stat`, field 22).
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// An embedded server that stops when this guard is dropped, if its handle owns it: every
/// way out of the code that started it (an early `?` after start-up, a panic) stops the
/// server, not only the orderly end. [`StopOnDrop::stop`] stops it and reports how it went.
pub struct StopOnDrop(Option<EmbeddedPostgres>);

impl StopOnDrop {
    pub fn new(pg: EmbeddedPostgres) -> Self {
        StopOnDrop(Some(pg))
    }

    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        match self.0.take() {
            Some(pg) => pg.stop().await,
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for StopOnDrop {
    type Target = EmbeddedPostgres;

    fn deref(&self) -> &EmbeddedPostgres {
        self.0.as_ref().expect("present until stopped or dropped")
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pg) = self.0.take() {
            pg.stop_blocking();
        }
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    if tail.is_empty() {
        "(the log is empty)".into()
    } else {
        tail
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
