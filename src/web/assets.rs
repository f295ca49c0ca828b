//! The web app's static files, embedded in the binary: the stylesheet, `app.js` and the
//! vendored htmx (see `assets/vendor/README.md`). Each is served under a path holding a hash of
//! its content, so it can be cached for good (`immutable`): a new build with a changed file has
//! a new path.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::http::Path;

/// Where the files are served: `/app/assets/{file}`.
pub const PREFIX: &str = "/app/assets/";

struct Asset {
    /// `name.hash.ext`, as served.
    file: String,
    bytes: &'static [u8],
    content_type: &'static str,
}

/// The files, by their plain name.
const FILES: &[(&str, &[u8], &str)] = &[
    (
        "app.css",
        include_bytes!("assets/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "app.js",
        include_bytes!("assets/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "htmx.min.js",
        include_bytes!("assets/vendor/htmx-2.0.11.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "htmx-ext-sse.min.js",
        include_bytes!("assets/vendor/htmx-ext-sse-2.2.4.min.js"),
        "text/javascript; charset=utf-8",
    ),
];

static ASSETS: LazyLock<Vec<(&'static str, Asset)>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, bytes, content_type)| {
            let hash = hex::encode(&Sha256::digest(bytes)[..6]);
            let (stem, ext) = name
                .rsplit_once('.')
                .expect("a file name with an extension");
            let asset = Asset {
                file: format!("{stem}.{hash}.{ext}"),
                bytes,
                content_type,
            };
            (*name, asset)
        })
        .collect()
});

/// The served path of a file, by its plain name (`app.css` → `/app/assets/app.1a2b3c4d5e6f.css`).
pub fn url(name: &str) -> String {
    let asset = ASSETS
        .iter()
        .find(|(plain, _)| *plain == name)
        .map(|(_, asset)| asset)
        .unwrap_or_else(|| panic!("no asset named {name}"));
    format!("{PREFIX}{}", asset.file)
}

/// The paths the pages link to.
#[derive(Debug, Clone)]
pub struct Urls {
    pub css: String,
    pub app_js: String,
    pub htmx: String,
    pub htmx_sse: String,
}

pub static URLS: LazyLock<Urls> = LazyLock::new(|| Urls {
    css: url("app.css"),
    app_js: url("app.js"),
    htmx: url("htmx.min.js"),
    htmx_sse: url("htmx-ext-sse.min.js"),
});

/// `GET /app/assets/{file}`: the file whose hashed name this is; any other name (an old hash
/// included) is not found.
pub async fn serve(Path(file): Path<String>) -> Result<Response, Error> {
    let asset = ASSETS
        .iter()
        .map(|(_, asset)| asset)
        .find(|asset| asset.file == file)
        .ok_or(Error::NotFound)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.bytes,
    )
        .into_response())
}
