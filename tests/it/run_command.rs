//! The README's run command: with no DATABASE_URL the binary provisions its own PostgreSQL,
//! creates the demo tenant, prints its owner's credentials once, answers /readyz, shuts down
//! cleanly on SIGTERM and keeps its data for the next start.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(data_dir: &std::path::Path, port: u16) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_custodian"))
        .args(["serve", "--demo", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let wait = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let listening = line.starts_with("custodian listening");
            seen.push(line);
            if listening {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("the server started");
    (child, seen)
}

async fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn the_run_command_provisions_its_own_database_and_serves_a_demo_tenant() {
    let dir = tempfile::Builder::new()
        .prefix("custodian-run-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("var");
    let port = free_port();
    let (child, output) = start(&data_dir, port).await;
    let password = output
        .iter()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no demo password printed: {output:?}"))
        .to_string();

    // The web app's sign-in address comes first.
    let first = output.iter().find(|l| !l.trim().is_empty()).unwrap();
    assert!(
        first.contains(&format!("http://127.0.0.1:{port}/app/login")),
        "{output:?}"
    );

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let login = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({ "tenant": "demo", "email": "owner@demo.example", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // The demo web chat answers from the demo knowledge base, offline.
    let page = output
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.contains("/demo/chat/")))
        .unwrap_or_else(|| panic!("no demo chat printed: {output:?}"))
        .to_string();
    let inbox = page.rsplit('/').next().unwrap().to_string();
    let html = client.get(&page).send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.text().await.unwrap().contains(&inbox));
    let origin = format!("http://127.0.0.1:{port}");
    let session: serde_json::Value = client
        .post(format!("{base}/api/v1/webchat/{inbox}/sessions"))
        .header("origin", &origin)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["session_token"]
        .as_str()
        .expect("a session")
        .to_string();
    // The knowledge base is embedded in the background right after start-up.
    crate::common::eventually(30, "the demo knowledge base to be embedded", || {
        let (client, url, cookie) = (
            client.clone(),
            format!("{base}/api/v1/knowledge/status"),
            cookie.clone(),
        );
        async move {
            let status: serde_json::Value = client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (status["ready"] == 3).then_some(())
        }
    })
    .await;
    let sent = client
        .post(format!("{base}/api/v1/webchat/{inbox}/messages"))
        .header("origin", &origin)
        .header("x-webchat-session", &token)
        .json(&serde_json::json!({ "body": "How long do I have to return an item?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    let answer = crate::common::eventually(30, "the offline answer", || {
        let (client, url, token) = (
            client.clone(),
            format!("{base}/api/v1/webchat/{inbox}/messages"),
            token.clone(),
        );
        async move {
            let history: serde_json::Value = client
                .get(url)
                .header("x-webchat-session", token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            history["messages"]
                .as_array()?
                .iter()
                .find(|m| m["author_kind"] == "ai")
                .cloned()
        }
    })
    .await;
    assert!(
        answer["body"].as_str().unwrap().contains("30 days"),
        "{answer}"
    );
    // The signed-in inbox is not empty: the demo's customers have written.
    crate::common::eventually(30, "the demo conversations in the web inbox", || {
        let (client, url, cookie) = (client.clone(), format!("{base}/app"), cookie.clone());
        async move {
            let page = client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (page.contains("Ana Lima") && page.contains("Maria Souza")).then_some(())
        }
    })
    .await;
    stop(child).await;
    assert!(
        !data_dir.join("pg").join("postmaster.pid").exists(),
        "the database outlived the server"
    );

    // Second start: same data, and the password is not printed again.
    let (child, output) = start(&data_dir, port).await;
    assert!(
        output.iter().all(|l| !l.contains(&password)),
        "the password was printed twice"
    );
    assert!(
        output.iter().any(|l| l.contains("already exists")),
        "{output:?}"
    );
    let login = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({ "tenant": "demo", "email": "owner@demo.example", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        login.status(),
        200,
        "the demo tenant did not survive a restart"
    );
    stop(child).await;
}

#[tokio::test]
async fn the_migrate_command_applies_every_migration_and_exits_0() {
    use sqlx::Connection;
    // An empty database on the test server: nothing applied yet.
    let server = crate::common::server().await;
    let name = format!("m_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect_with(&server).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let host = match server.get_socket() {
        Some(dir) => dir.display().to_string().replace('/', "%2F"),
        None => server.get_host().to_string(),
    };
    let url = format!(
        "postgres://{}@{host}:{}/{name}",
        server.get_username(),
        server.get_port()
    );

    let run = || {
        Command::new(env!("CARGO_BIN_EXE_custodian"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
    };
    let first = run().await.unwrap();
    let second = run().await.unwrap();

    let mut db = sqlx::PgConnection::connect_with(&server.clone().database(&name))
        .await
        .unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let has_vector: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')")
            .fetch_one(&mut db)
            .await
            .unwrap();
    db.close().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();

    for output in [&first, &second] {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    }
    let expected: Vec<i64> = custodian::db::MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(applied, expected, "every migration, once");
    assert!(has_vector);
}
