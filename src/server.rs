//! Running the platform: start-up, the demo tenant, graceful shutdown, and the small
//! administrative commands (`migrate`, `audit verify`).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::app::{self, AppState};
use crate::auth::token::{self, Keys};
use crate::config::Config;
use crate::db::{self, Database};
use crate::http::RequestMeta;
use crate::tenants::{self, SignupBody};

pub const DEMO_SLUG: &str = "demo";
pub const DEMO_OWNER_EMAIL: &str = "owner@demo.example";

pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Serves until SIGINT/SIGTERM, then drains requests, stops workers and the embedded database.
/// `router` builds what is served from the state: the web app, which stands above this layer,
/// hands its own (`web::router`, the API's with the pages) through `main`.
pub async fn serve(
    config: Config,
    demo: bool,
    router: fn(AppState) -> axum::Router,
) -> anyhow::Result<()> {
    // Rule packs are data: a broken one stops start-up loudly, before anything listens, and the
    // first customer message does not pay for compiling them (about 0.4 s).
    tokio::task::spawn_blocking(crate::guardrails::warm_up)
        .await?
        .context("the built-in guardrail packs are invalid")?;
    // `embedded` stops a cluster we own on every way out of this function, early returns
    // included (a port already taken, a failed demo tenant), not only after a clean shutdown.
    let Database { db, embedded } = db::open(&config).await?;
    let keys = load_keys(&config)?;
    let sealer = load_sealer(&config)?;
    let state = AppState::new(config, db, keys, sealer)?;
    let router = router(state.clone());
    let listener = tokio::net::TcpListener::bind(state.config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", state.config.bind))?;
    let addr = listener.local_addr()?;
    let workers = app::spawn_workers(&state);
    // Workers stop too when start-up fails from here on.
    let _stop_workers = state.shutdown.clone().drop_guard();

    if demo {
        ensure_demo_tenant(&state, addr).await?;
    }
    tracing::info!(%addr, embedded_db = embedded.is_some(), "custodian is listening");
    // The web app first; the listening line last, as scripts wait for it and may stop reading.
    if !demo {
        println!("Sign in to the web app at http://{addr}/app/login");
    }
    println!("custodian listening on http://{addr}  (readiness: http://{addr}/readyz)");

    let stop = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    let stop = state.shutdown.clone();
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await?;

    for worker in workers {
        let _ = worker.await;
    }
    state.db.app.close().await;
    state.db.system.close().await;
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The session-signing key: SECRET_KEY, or one generated once into the data directory so
/// sessions survive restarts.
pub fn load_keys(config: &Config) -> anyhow::Result<Keys> {
    let key = key_bytes(
        config.secret_key.as_ref(),
        config,
        "secret.key",
        "SECRET_KEY",
    )?;
    Ok(Keys::new(key))
}

/// The key tenant secrets are sealed with: ENCRYPTION_KEY, or one generated once into the
/// data directory (the embedded default). Losing it makes stored channel secrets unreadable.
pub fn load_sealer(config: &Config) -> anyhow::Result<crate::crypto::Sealer> {
    let key = key_bytes(
        config.encryption_key.as_ref(),
        config,
        "encryption.key",
        "ENCRYPTION_KEY",
    )?;
    Ok(crate::crypto::Sealer::new(key))
}

fn key_bytes(
    configured: Option<&SecretString>,
    config: &Config,
    file: &str,
    variable: &str,
) -> anyhow::Result<[u8; 32]> {
    let encoded = match configured {
        Some(key) => key.clone(),
        None => read_or_create_key_file(&config.data_dir.join(file))?,
    };
    let bytes = B64
        .decode(encoded.expose_secret().trim())
        .with_context(|| format!("{variable} is not base64"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{variable} must be 32 bytes (base64)"))
}

fn read_or_create_key_file(path: &Path) -> anyhow::Result<SecretString> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(existing.into());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let encoded = B64.encode(token::random_bytes());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(encoded.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a new key");
    Ok(encoded.into())
}

/// Creates the demo tenant on first start and prints its owner's credentials, once.
async fn ensure_demo_tenant(state: &AppState, addr: SocketAddr) -> anyhow::Result<()> {
    let exists = sqlx::query_scalar!("SELECT id FROM tenant WHERE slug = $1", DEMO_SLUG)
        .fetch_optional(&state.db.system)
        .await?;
    if exists.is_some() {
        println!(
            "Sign in to the web app at http://{addr}/app/login\n  \
             demo tenant '{DEMO_SLUG}' already exists; its owner ({DEMO_OWNER_EMAIL}) password was \
             printed when it was created"
        );
        return Ok(());
    }
    let password = token::new_opaque_token();
    let body = SignupBody {
        tenant_name: "Demo Company".into(),
        tenant_slug: DEMO_SLUG.into(),
        email: DEMO_OWNER_EMAIL.into(),
        display_name: "Demo Owner".into(),
        password: password.clone().into(),
    };
    let (created, _) = tenants::create_tenant(&state.auth(), body, &RequestMeta::default())
        .await
        .map_err(|e| anyhow::anyhow!("creating the demo tenant failed: {e}"))?;
    let inbox_id = seed_demo(state, created.tenant.id, addr)
        .await
        .map_err(|e| anyhow::anyhow!("seeding the demo tenant failed: {e}"))?;
    // The conversations come once the knowledge base can answer them, in the background, so
    // that the agent's replies to them are the offline responder's real ones.
    let seeder = state.clone();
    let tenant_id = created.tenant.id;
    tokio::spawn(async move {
        if let Err(e) = seed_demo_conversations(&seeder, tenant_id, inbox_id).await {
            tracing::warn!(error = %e, "seeding the demo conversations failed");
        }
    });
    println!(
        "\nDemo tenant created. Sign in to the web app at http://{addr}/app/login\n  \
         workspace: {DEMO_SLUG}\n  email: {DEMO_OWNER_EMAIL}\n  password: {password}\n  \
         (shown this once; only its Argon2id hash is stored; the JSON API takes the same at \
         POST http://{addr}/api/v1/auth/login with \"tenant\", \"email\", \"password\")\n\n\
         Web chat (offline responder, answering from the demo knowledge base):\n  \
         open http://{addr}/demo/chat/{inbox_id} and ask e.g. \"How long do I have to return an item?\"\n"
    );
    Ok(())
}

const DEMO_ARTICLES: &[(&str, &str)] = &[
    ("Returns and refunds", "You can return any item within 30 days of delivery for a full refund. Start a return from the Orders page; refunds reach your original payment method within 5 business days."),
    ("Shipping times", "Orders leave our warehouse within 2 business days. Standard delivery takes 3 to 5 business days; express delivery arrives the next business day."),
    ("Changing your password", "To change your password, open Settings, choose Security and select Change password. You will need your current password."),
];

/// The demo tenant's web chat inbox (open to the local demo page) and knowledge base.
async fn seed_demo(
    state: &AppState,
    tenant_id: Uuid,
    addr: SocketAddr,
) -> crate::error::Result<Uuid> {
    let inbox_id = Uuid::now_v7();
    let origins = serde_json::json!([
        format!("http://{addr}"),
        format!("http://localhost:{}", addr.port())
    ]);
    let secrets = state.sealer.seal_json(
        &crate::channels::WebchatSecrets::default(),
        &crate::channels::seal_context(inbox_id),
    );
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "INSERT INTO inbox (id, tenant_id, name, channel, settings, secrets) VALUES ($1, $2, 'Demo web chat', 'webchat', $3, $4)",
        inbox_id,
        tenant_id,
        serde_json::json!({ "allowed_origins": origins, "identity_required": false }),
        secrets
    )
    .execute(&mut *tx)
    .await?;
    for (title, body) in DEMO_ARTICLES {
        let id = Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO knowledge_article (id, tenant_id, title, body) VALUES ($1, $2, $3, $4)",
            id,
            tenant_id,
            title,
            body
        )
        .execute(&mut *tx)
        .await?;
        crate::knowledge::schedule_embedding(&mut tx, tenant_id, id, 1).await?;
    }
    crate::audit::record(
        &mut tx,
        &crate::audit::AuditSource::system(tenant_id),
        crate::audit::AuditEvent::new("demo.seeded", "tenant", tenant_id)
            .after(serde_json::json!({ "inbox_id": inbox_id, "articles": DEMO_ARTICLES.len() })),
    )
    .await?;
    tx.commit().await?;
    Ok(inbox_id)
}

/// What the demo's customers write: (name, message, resolved afterwards). The first is answered
/// by the AI from the knowledge base; the second asks with a greeting and contact details around
/// the question, which the offline responder is unsure of, so its draft waits for a person; the
/// third asks what the knowledge base hardly knows and goes to a person; the last is resolved
/// (and answered by the AI, which answers a resolved conversation's customer too).
const DEMO_CONVERSATIONS: &[(&str, &str, bool)] = &[
    ("Ana Lima", "How long do I have to return an item?", false),
    (
        "Maria Souza",
        "Hi, I'm Maria Souza, my email is maria@example.com. How long do I have to return an item?",
        false,
    ),
    (
        "Jonas Weber",
        "Can I pay by bank transfer for a business order of 40 units?",
        false,
    ),
    ("Sofia Rossi", "How do I change my password?", true),
];

/// The demo's first conversations, through the domains' own functions as the web chat makes
/// them, so a newcomer's first look at the inbox is not empty. Waits (a minute at most) for the
/// knowledge base's embeddings first, so the agent can answer.
async fn seed_demo_conversations(
    state: &AppState,
    tenant_id: Uuid,
    inbox_id: Uuid,
) -> crate::error::Result<()> {
    use crate::conversations::{self, Inbound, Ingested, Sender};
    for _ in 0..120 {
        let mut tx = state.db.tenant_tx(tenant_id).await?;
        let pending = crate::knowledge::pending_embeddings(&mut tx, tenant_id).await?;
        tx.commit().await?;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let source = crate::audit::AuditSource::system(tenant_id);
    for (name, text, resolved) in DEMO_CONVERSATIONS {
        let mut tx = state.db.tenant_tx(tenant_id).await?;
        let contact = crate::crm::contacts::create_visitor(
            &mut tx,
            tenant_id,
            Some(name),
            &serde_json::json!({}),
        )
        .await?;
        crate::audit::record(
            &mut tx,
            &source,
            crate::audit::AuditEvent::new("contact.created", "contact", contact)
                .after(serde_json::json!({ "name": name, "via": "demo" })),
        )
        .await?;
        let ingested = conversations::ingest(
            &mut tx,
            tenant_id,
            Inbound {
                inbox_id,
                from: Sender::Contact(contact),
                provider_message_id: None,
                content_type: "text",
                body: text,
                attachments: serde_json::json!([]),
                provider_timestamp: None,
            },
        )
        .await?;
        if let (
            true,
            Ingested::New {
                conversation_id, ..
            },
        ) = (*resolved, ingested)
        {
            conversations::resolve(&mut tx, &source, conversation_id).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// `custodian audit verify --tenant <id|slug>`: true when the chain holds.
pub async fn audit_verify(config: Config, tenant: &str) -> anyhow::Result<bool> {
    let Database { db, embedded } = db::open(&config).await?;
    let tenant_id = match Uuid::parse_str(tenant) {
        Ok(id) => Some(id),
        Err(_) => {
            sqlx::query_scalar!("SELECT id FROM tenant WHERE slug = $1", tenant)
                .fetch_optional(&db.system)
                .await?
        }
    };
    let result = async {
        let tenant_id = tenant_id.with_context(|| format!("no tenant {tenant}"))?;
        let report = crate::audit::verify(&db.system, tenant_id).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        anyhow::Ok(report.valid)
    }
    .await;
    db.system.close().await;
    db.app.close().await;
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    result
}

/// `custodian migrate`: applies migrations and exits.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let Database { db, embedded } = db::open(&config).await?;
    println!("migrations applied");
    db.system.close().await;
    db.app.close().await;
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    Ok(())
}
