//! The embedded default database against the real PostgreSQL and pgvector installed on
//! the machine (`scripts/install-postgres.sh`). Each test gets its own cluster in its own
//! directory under /tmp.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use custodian::db::embedded::{EmbeddedError, EmbeddedPostgres};
use sqlx::{Connection, PgConnection};

/// A fresh data directory path (not yet created). Dropping it kills any server still
/// running there, so a failed test leaves no orphan postmaster behind.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("custodian-pg-")
            .tempdir_in("/tmp")
            .expect("create a temp dir");
        // When the tests run as root the server runs as `postgres`, which must get in.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temp dir");
        Self { dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            // SIGQUIT: immediate shutdown; the directory is about to be deleted anyway.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

async fn connect(pg: &EmbeddedPostgres) -> PgConnection {
    PgConnection::connect_with(&pg.connect_options("postgres"))
        .await
        .expect("connect over the Unix socket")
}

async fn is_serving(pg: &EmbeddedPostgres) -> bool {
    PgConnection::connect_with(&pg.connect_options("postgres"))
        .await
        .is_ok()
}

#[tokio::test]
async fn a_new_cluster_answers_queries_has_pgvector_and_keeps_its_data_across_a_restart() {
    let scratch = Scratch::new();

    let pg = EmbeddedPostgres::start(&scratch.data_dir())
        .await
        .expect("first start");
    assert!(pg.started_here());
    assert!(
        scratch.data_dir().join("PG_VERSION").is_file(),
        "initdb ran"
    );
    let mut conn = connect(&pg).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    sqlx::query("CREATE EXTENSION vector")
        .execute(&mut conn)
        .await
        .expect("pgvector loads");
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY, embedding vector(3))")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes VALUES (1, '[1,2,3]')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    pg.stop().await.expect("stop");
    assert!(
        !scratch.data_dir().join("postmaster.pid").exists(),
        "server stopped"
    );
    assert!(!is_serving(&pg).await);

    let pg = EmbeddedPostgres::start(&scratch.data_dir())
        .await
        .expect("second start");
    assert!(
        pg.started_here(),
        "the stopped cluster was started again, not re-created"
    );
    let mut conn = connect(&pg).await;
    let distance: f64 =
        sqlx::query_scalar("SELECT embedding <-> '[1,2,4]' FROM notes WHERE id = 1")
            .fetch_one(&mut conn)
            .await
            .expect("the table made before the restart is still there");
    assert_eq!(distance, 1.0);
    conn.close().await.unwrap();
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn starting_a_cluster_that_is_already_running_reuses_it_and_leaves_it_running() {
    let scratch = Scratch::new();
    let first = EmbeddedPostgres::start(&scratch.data_dir()).await.unwrap();
    let pid = scratch.postmaster_pid().unwrap();

    let second = EmbeddedPostgres::start(&scratch.data_dir())
        .await
        .expect("reuse");
    assert!(!second.started_here());
    assert_eq!(
        scratch.postmaster_pid(),
        Some(pid),
        "no second server was started"
    );
    let mut conn = connect(&second).await;
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    second.stop().await.unwrap();
    assert!(
        is_serving(&first).await,
        "only the handle that started the server stops it"
    );
    first.stop().await.unwrap();
    assert!(!is_serving(&first).await);
}

#[tokio::test]
async fn two_starts_at_once_on_a_new_directory_make_one_cluster_and_one_server() {
    let scratch = Scratch::new();
    let dir = scratch.data_dir();

    let (a, b) = tokio::join!(EmbeddedPostgres::start(&dir), EmbeddedPostgres::start(&dir));
    let (a, b) = (a.expect("first start"), b.expect("second start"));
    assert!(
        a.started_here() != b.started_here(),
        "exactly one of them started the server"
    );
    let mut conn = connect(&b).await;
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert!(!is_serving(&a).await);
}

#[tokio::test]
async fn the_server_listens_only_on_a_private_socket_and_the_url_works_with_sqlx() {
    let scratch = Scratch::new();
    let pg = EmbeddedPostgres::start(&scratch.data_dir()).await.unwrap();
    let data_dir = std::fs::canonicalize(scratch.data_dir()).unwrap();
    assert_eq!(pg.socket_dir(), data_dir);

    let url = pg.connection_url("postgres");
    assert!(url.starts_with("postgres://postgres@%2F"), "{url}");
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("sqlx accepts the URL");
    let settings: (String, String, Option<String>) = sqlx::query_as(
        "SELECT current_setting('listen_addresses'), \
                current_setting('unix_socket_permissions'), \
                inet_server_addr()::text",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(settings, (String::new(), "0700".to_string(), None));
    conn.close().await.unwrap();
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn a_stale_pid_file_left_by_a_dead_server_does_not_block_start() {
    let scratch = Scratch::new();
    let pg = EmbeddedPostgres::start(&scratch.data_dir()).await.unwrap();
    let pid_file = scratch.data_dir().join("postmaster.pid");
    let live_contents = std::fs::read_to_string(&pid_file).unwrap();
    pg.stop().await.unwrap();

    // As after a crash and a reboot: the old pid now belongs to an unrelated live
    // process (this test), which the postmaster alone would take for a running server.
    let (_, rest) = live_contents.split_once('\n').unwrap();
    std::fs::write(&pid_file, format!("{}\n{rest}", std::process::id())).unwrap();

    let pg = EmbeddedPostgres::start(&scratch.data_dir())
        .await
        .expect("start over a stale pid");
    assert!(pg.started_here());
    assert!(is_serving(&pg).await);
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_that_was_killed_is_started_again_and_recovers_its_data() {
    let scratch = Scratch::new();
    let pg = EmbeddedPostgres::start(&scratch.data_dir()).await.unwrap();
    let mut conn = connect(&pg).await;
    sqlx::query("CREATE TABLE survivors AS SELECT 42 AS answer")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    // As after a crash of the machine: no clean shutdown, postmaster.pid left behind.
    let pid = scratch.postmaster_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let pg = EmbeddedPostgres::start(&scratch.data_dir())
        .await
        .expect("restart after a kill");
    assert!(
        pg.started_here(),
        "the dead server's pid file was not taken for a live one"
    );
    let mut conn = connect(&pg).await;
    let answer: i32 = sqlx::query_scalar("SELECT answer FROM survivors")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    conn.close().await.unwrap();
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn a_data_dir_path_too_long_for_a_unix_socket_is_refused_with_a_clear_error() {
    let scratch = Scratch::new();
    let long = scratch.dir.path().join("d".repeat(100));

    let error = EmbeddedPostgres::start(&long)
        .await
        .expect_err("path too long");
    assert!(
        matches!(error, EmbeddedError::DataDirPathTooLong { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("CUSTODIAN_DATA_DIR") && !message.contains("PG_DATA_DIR"),
        "{message}"
    );
    assert!(!long.exists(), "nothing was created");
}

#[tokio::test]
async fn a_non_empty_directory_without_a_cluster_is_refused_and_left_untouched() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.data_dir()).unwrap();
    std::fs::write(scratch.data_dir().join("notes.txt"), "mine").unwrap();

    let error = EmbeddedPostgres::start(&scratch.data_dir())
        .await
        .expect_err("not a cluster");
    assert!(
        matches!(error, EmbeddedError::NotACluster { .. }),
        "{error:?}"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.data_dir().join("notes.txt")).unwrap(),
        "mine"
    );
}

#[tokio::test]
async fn as_root_a_data_dir_the_postgres_user_cannot_reach_is_refused_with_a_clear_error() {
    if !nix::unistd::geteuid().is_root() {
        return; // Only root hands the server to the `postgres` user.
    }
    let scratch = Scratch::new();
    let locked = scratch.dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();

    let error = EmbeddedPostgres::start(&locked.join("pg"))
        .await
        .expect_err("unreachable");
    match &error {
        EmbeddedError::DataDirUnreachable { blocked, .. } => assert_eq!(blocked, &locked),
        other => panic!("expected DataDirUnreachable, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("--data-dir /var/lib/custodian`")
            && message.contains("CUSTODIAN_DATA_DIR=/var/lib/custodian`")
            && message.contains(&format!("chmod o+x {}", locked.display())),
        "{message}"
    );
}

/// The script the "not installed" message must name.
const INSTALL_SCRIPT: &str = "scripts/install-postgres.sh";

/// The real binary, on the embedded default (no DATABASE_URL) in `data_dir`.
fn custodian(data_dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_custodian"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env_remove("CUSTODIAN_PG_BINDIR")
        .env("CUSTODIAN_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z ") && !stat.contains(") X "))
}

#[tokio::test]
async fn missing_server_binaries_give_one_message_naming_the_install_script() {
    let scratch = Scratch::new();
    let empty = scratch.dir.path().join("no-binaries-here");
    std::fs::create_dir(&empty).unwrap();

    let error = EmbeddedPostgres::start_with(&scratch.data_dir(), Some(&empty))
        .await
        .expect_err("no binaries");
    assert!(
        matches!(error, EmbeddedError::NotInstalled { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(INSTALL_SCRIPT), "{error}");
    assert!(!scratch.data_dir().exists(), "nothing was created");

    // The binary says the same, once, and fails.
    let output = custodian(scratch.dir.path())
        .arg("migrate")
        .env("CUSTODIAN_PG_BINDIR", &empty)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(INSTALL_SCRIPT).count(), 1, "{stderr}");
    assert!(!scratch.data_dir().exists(), "nothing was created");
}

#[tokio::test]
async fn a_server_without_pgvector_gives_one_message_naming_the_install_script() {
    // A PostgreSQL "99" laid out like a plain install, with plpgsql but no pgvector.
    let scratch = Scratch::new();
    let prefix = scratch.dir.path().join("pg99");
    for dir in ["bin", "share/extension", "lib"] {
        std::fs::create_dir_all(prefix.join(dir)).unwrap();
    }
    let postgres = prefix.join("bin/postgres");
    std::fs::write(&postgres, "#!/bin/sh\necho 'postgres (PostgreSQL) 99.0'\n").unwrap();
    std::fs::set_permissions(&postgres, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in [
        "bin/initdb",
        "bin/pg_ctl",
        "share/extension/plpgsql.control",
        "lib/plpgsql.so",
    ] {
        std::fs::write(prefix.join(file), "").unwrap();
    }

    let error = EmbeddedPostgres::start_with(&scratch.data_dir(), Some(&prefix.join("bin")))
        .await
        .expect_err("no pgvector");
    let message = error.to_string();
    assert!(
        matches!(error, EmbeddedError::NotInstalled { .. }),
        "{error:?}"
    );
    assert!(
        message.contains("pgvector") && message.contains("vector.control"),
        "{message}"
    );
    assert!(message.contains(INSTALL_SCRIPT), "{message}");
    assert!(!scratch.data_dir().exists(), "nothing was created");
}

#[tokio::test]
async fn a_start_up_that_fails_after_the_database_started_stops_it() {
    let scratch = Scratch::new();
    // The port is taken, so binding fails once the database is up and migrated.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = custodian(scratch.dir.path())
        .args(["serve", "--bind", &taken.local_addr().unwrap().to_string()])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(
        scratch.data_dir().join("PG_VERSION").is_file(),
        "the database was created: {stderr}"
    );
    assert!(
        scratch.postmaster_pid().is_none(),
        "the database outlived the failed start"
    );
}

#[tokio::test]
async fn a_server_left_by_a_crashed_run_is_taken_over_and_stopped_by_the_next_one() {
    let scratch = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = custodian(scratch.dir.path())
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(serve.stdout.take().unwrap()));
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("custodian listening") {
                break;
            }
        }
    })
    .await
    .expect("the server started");
    let postmaster = scratch.postmaster_pid().expect("the database runs");

    // While the server lives, the database is its own: another start only borrows it.
    let borrowed = EmbeddedPostgres::start(&scratch.data_dir()).await.unwrap();
    assert!(!borrowed.owns_server());
    borrowed.stop().await.unwrap();
    assert!(is_running(postmaster), "a borrower stopped the database");

    // The server dies without a chance to stop its database.
    serve.kill().await.unwrap();
    assert!(is_running(postmaster), "the database outlives a crash");

    let next = EmbeddedPostgres::start(&scratch.data_dir()).await.unwrap();
    assert!(!next.started_here(), "the running database was reused");
    assert!(next.owns_server(), "and taken over from the dead owner");
    assert_eq!(scratch.postmaster_pid(), Some(postmaster));
    next.stop().await.unwrap();
    assert!(
        scratch.postmaster_pid().is_none(),
        "the next run stopped it"
    );
}
