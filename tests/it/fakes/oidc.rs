//! A fake OpenID Connect provider for tests.
//!
//! Real HTTP on `127.0.0.1:0`, speaking the provider's side of the authorization-code flow as
//! Okta or Entra ID do: the discovery document at `/.well-known/openid-configuration`, the
//! signing keys at `/jwks`, the authorization endpoint (which signs the configured user in at
//! once and redirects back with a code and the state) and the token endpoint (which checks the
//! client secret by HTTP Basic, the code, the redirect URI and the PKCE verifier, then answers an
//! ID token signed with ES256 by a P-256 key made when the fake starts).
//!
//! Knobs forge what a hostile or broken provider would send ([`Forge`]): another audience or
//! issuer, an expired token, a signature by a key the JWKS does not hold, another nonce. The
//! user it signs in ([`User`]) says which address and whether it is verified. [`FakeOidc::rotate`]
//! replaces the signing key (and its id) as a provider's key rotation does.
#![allow(dead_code)] // each test uses a different part of the fake

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::Digest;

pub const CLIENT_ID: &str = "custodian-client";
pub const CLIENT_SECRET: &str = "s3cret-of-the-client";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A P-256 signing key and its id.
#[derive(Clone)]
struct Key {
    kid: String,
    pkcs8: Vec<u8>,
    x: String,
    y: String,
}

impl Key {
    fn generate(kid: &str) -> Key {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("read the key back");
        // Uncompressed point: 0x04 || x || y.
        let public = pair.public_key().as_ref();
        Key {
            kid: kid.to_string(),
            pkcs8: pkcs8.as_ref().to_vec(),
            x: b64(&public[1..33]),
            y: b64(&public[33..65]),
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "use": "sig", "alg": "ES256",
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .expect("sign the ID token")
    }
}

/// Who the provider signs in.
#[derive(Debug, Clone)]
pub struct User {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

/// What the next ID tokens get wrong on purpose.
#[derive(Debug, Clone, Default)]
pub struct Forge {
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// Expired an hour ago.
    pub expired: bool,
    /// Signed by a key the JWKS does not hold, under the id of the one it does.
    pub foreign_key: bool,
    pub nonce: Option<String>,
}

struct Grant {
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    used: bool,
}

struct Shared {
    issuer: String,
    key: Mutex<Key>,
    user: Mutex<User>,
    forge: Mutex<Forge>,
    codes: Mutex<HashMap<String, Grant>>,
    authorize_queries: Mutex<Vec<HashMap<String, String>>>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    next: AtomicUsize,
}

pub struct FakeOidc {
    /// The issuer identifier (`http://127.0.0.1:<port>`).
    pub issuer: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOidc {
    pub async fn start(user_email: &str) -> FakeOidc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake identity provider on loopback");
        let addr = listener.local_addr().expect("fake provider address");
        let issuer = format!("http://{addr}");
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            key: Mutex::new(Key::generate("key-1")),
            user: Mutex::new(User {
                sub: format!("sub-{user_email}"),
                email: user_email.to_string(),
                email_verified: true,
                name: "Ana Lima".into(),
            }),
            forge: Mutex::new(Forge::default()),
            codes: Mutex::new(HashMap::new()),
            authorize_queries: Mutex::new(Vec::new()),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            next: AtomicUsize::new(1),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake identity provider");
        });
        FakeOidc {
            issuer,
            shared,
            server,
        }
    }

    pub fn set_user(&self, change: impl FnOnce(&mut User)) {
        change(&mut self.shared.user.lock().unwrap());
    }

    pub fn forge(&self, forge: Forge) {
        *self.shared.forge.lock().unwrap() = forge;
    }

    /// A new signing key under a new id; the JWKS serves only it from now on.
    pub fn rotate(&self) {
        let n = self.shared.next.fetch_add(1, Ordering::SeqCst) + 1;
        *self.shared.key.lock().unwrap() = Key::generate(&format!("key-{n}"));
    }

    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// The query strings the authorization endpoint was sent.
    pub fn authorize_queries(&self) -> Vec<HashMap<String, String>> {
        self.shared.authorize_queries.lock().unwrap().clone()
    }
}

impl Drop for FakeOidc {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let issuer = &shared.issuer;
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let key = shared.key.lock().unwrap().clone();
    axum::Json(json!({ "keys": [key.jwk()] })).into_response()
}

fn oauth_error(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": error })),
    )
        .into_response()
}

/// Signs the configured user in at once and sends the browser back with a code.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    shared.authorize_queries.lock().unwrap().push(query.clone());
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    if field("response_type") != "code"
        || field("client_id") != CLIENT_ID
        || field("code_challenge_method") != "S256"
        || field("code_challenge").is_empty()
        || !field("scope").split(' ').any(|s| s == "openid")
    {
        return oauth_error("invalid_request");
    }
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    shared.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            redirect_uri: field("redirect_uri"),
            code_challenge: field("code_challenge"),
            nonce: query.get("nonce").cloned(),
            used: false,
        },
    );
    let mut back = reqwest::Url::parse(&field("redirect_uri")).expect("a redirect URI");
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &field("state"));
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| v)
    };
    Some((decode(id)?, decode(secret)?))
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return oauth_error("invalid_request");
    };
    if basic_credentials(&headers) != Some((CLIENT_ID.into(), CLIENT_SECRET.into())) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    if field("grant_type") != "authorization_code" {
        return oauth_error("unsupported_grant_type");
    }
    let nonce = {
        let mut codes = shared.codes.lock().unwrap();
        let Some(grant) = codes.get_mut(&field("code")) else {
            return oauth_error("invalid_grant");
        };
        let challenge = b64(&sha2::Sha256::digest(field("code_verifier").as_bytes()));
        if grant.used
            || grant.redirect_uri != field("redirect_uri")
            || grant.code_challenge != challenge
        {
            return oauth_error("invalid_grant");
        }
        grant.used = true;
        grant.nonce.clone()
    };
    let user = shared.user.lock().unwrap().clone();
    let forge = shared.forge.lock().unwrap().clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (iat, exp) = if forge.expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 300)
    };
    let claims = json!({
        "iss": forge.issuer.unwrap_or_else(|| shared.issuer.clone()),
        "sub": user.sub,
        "aud": forge.audience.unwrap_or_else(|| CLIENT_ID.to_string()),
        "iat": iat,
        "exp": exp,
        "nonce": forge.nonce.or(nonce),
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
    });
    let key = shared.key.lock().unwrap().clone();
    let signer = if forge.foreign_key {
        Key {
            kid: key.kid.clone(),
            ..Key::generate("foreign")
        }
    } else {
        key
    };
    axum::Json(json!({
        "access_token": "an-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": signer.sign(&claims),
    }))
    .into_response()
}
