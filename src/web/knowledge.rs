//! The knowledge base pages: the articles with search and a status filter, the tenant's
//! embedding progress (polled while something is pending), and creating, editing and deleting
//! an article with a Markdown preview rendered here, on the server.
//!
//! Every change goes through the knowledge domain's own functions (`knowledge::routes`), the
//! ones the API's routes call, so permissions and audit events are the same. The Markdown of an
//! article is shown as the agent's readers would see it, but safely: raw HTML in it is shown
//! as text, never passed through, and links keep only http, https and mailto targets.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use pulldown_cmark::{Alignment, Event, Options, Parser, Tag, TagEnd};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::login::Notice;
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::knowledge::routes::{
    self as kb, ArticleChanges, ArticleFilter, ArticleStatus, ArticleView, EmbeddingProgress,
    NewArticle,
};
use crate::rbac::Permission;

const LIST: &str = "/app/knowledge";
/// How many articles a list page shows.
const LIMIT: i64 = 100;

/// The knowledge base's pages, each with the access of the API route it stands for.
pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, LIST, Requires(KnowledgeRead), list)
        .page(Method::POST, LIST, Requires(KnowledgeManage), create)
        .page(
            Method::GET,
            "/app/knowledge/new",
            Requires(KnowledgeManage),
            new_form,
        )
        .page(
            Method::POST,
            "/app/knowledge/preview",
            Requires(KnowledgeManage),
            preview,
        )
        .page(
            Method::GET,
            "/app/knowledge/{article_id}",
            Requires(KnowledgeRead),
            show,
        )
        .page(
            Method::POST,
            "/app/knowledge/{article_id}",
            Requires(KnowledgeManage),
            update,
        )
        .page(
            Method::GET,
            "/app/knowledge/{article_id}/delete",
            Requires(KnowledgeManage),
            confirm_delete,
        )
        .page(
            Method::POST,
            "/app/knowledge/{article_id}/delete",
            Requires(KnowledgeManage),
            delete,
        )
}

// ---- Markdown ----

fn safe_link(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// An article's Markdown as HTML. Raw HTML in it becomes text (escaped), images become their
/// description, a link to anything but http, https or mailto becomes its text alone, and tables
/// lose their column alignment (which would need inline styles the CSP refuses).
pub fn markdown(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    // Links do not nest in CommonMark, so one flag says whether the link being closed was
    // dropped; images can nest inside links, and are always dropped.
    let mut dropped_link = false;
    let events = Parser::new_ext(text, options).filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::HtmlBlock) => Some(Event::Start(Tag::Paragraph)),
        Event::End(TagEnd::HtmlBlock) => Some(Event::End(TagEnd::Paragraph)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            if safe_link(&dest_url) {
                dropped_link = false;
                Some(Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title,
                    id,
                }))
            } else {
                dropped_link = true;
                None
            }
        }
        Event::End(TagEnd::Link) if dropped_link => {
            dropped_link = false;
            None
        }
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        Event::Start(Tag::Table(alignments)) => Some(Event::Start(Tag::Table(vec![
            Alignment::None;
            alignments
                .len()
        ]))),
        other => Some(other),
    });
    let mut html = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

// ---- Shared bits ----

fn readable(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn status_label(status: &str) -> &'static str {
    match status {
        "draft" => "Draft",
        "published" => "Published",
        "archived" => "Archived",
        _ => "Unknown",
    }
}

fn embedding_label(status: &str) -> &'static str {
    match status {
        "pending" => "Pending",
        "ready" => "Ready",
        "failed" => "Failed",
        _ => "Unknown",
    }
}

fn notice(kind: &'static str, message: impl Into<String>) -> Notice {
    Notice {
        kind,
        message: message.into(),
    }
}

fn article_href(id: Uuid) -> String {
    format!("{LIST}/{id}")
}

// ---- The list ----

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    after: Option<String>,
    /// Set by the redirect after a deletion, for its notice.
    deleted: Option<String>,
}

pub struct ArticleRow {
    pub id: Uuid,
    pub href: String,
    pub title: String,
    pub status: String,
    pub status_label: &'static str,
    pub embedding: String,
    pub embedding_label: &'static str,
    pub embedding_error: String,
    pub updated: String,
    pub updated_iso: String,
}

/// The tenant's embedding progress, as the list shows it.
pub struct ProgressView {
    pub total: i64,
    pub done: i64,
    pub ready: i64,
    pub pending: i64,
    pub failed: i64,
    pub percent: i64,
    pub model: String,
    /// `reembedding`, `embedding`, `failed` or `ready`.
    pub state: &'static str,
    pub text: String,
    /// Passages of an earlier model still stored (replaced as re-embedding proceeds).
    pub stale_chunks: i64,
}

impl From<EmbeddingProgress> for ProgressView {
    fn from(p: EmbeddingProgress) -> Self {
        let done = p.ready + p.failed;
        let (state, text) = if p.pending > 0 && p.stale_chunks > 0 {
            (
                "reembedding",
                format!(
                    "Re-embedding with {}: {} of {} articles done.",
                    p.model, done, p.articles
                ),
            )
        } else if p.pending > 0 {
            (
                "embedding",
                format!("Embedding: {} of {} articles done.", done, p.articles),
            )
        } else if p.failed > 0 {
            (
                "failed",
                format!(
                    "{} {} could not be embedded; the AI agent does not find {}.",
                    p.failed,
                    if p.failed == 1 { "article" } else { "articles" },
                    if p.failed == 1 { "it" } else { "them" }
                ),
            )
        } else {
            ("ready", "Every article is embedded.".to_string())
        };
        ProgressView {
            total: p.articles,
            done,
            ready: p.ready,
            pending: p.pending,
            failed: p.failed,
            percent: (p.progress * 100.0).floor() as i64,
            model: p.model,
            state,
            text,
            stale_chunks: p.stale_chunks,
        }
    }
}

#[derive(Template)]
#[template(path = "web/knowledge.html")]
struct ListPage {
    chrome: Chrome,
    can_manage: bool,
    notice: Option<Notice>,
    q: String,
    status: String,
    statuses: Vec<(&'static str, &'static str)>,
    rows: Vec<ArticleRow>,
    progress: ProgressView,
    /// Whether the list polls for progress (only while some article waits for its vectors).
    polling: bool,
    refresh_url: String,
    older_url: Option<String>,
    empty: String,
}

fn list_href(q: &str, status: &str, after: Option<Uuid>) -> String {
    let after = after.map(|id| id.to_string()).unwrap_or_default();
    let pairs: Vec<(&str, &str)> = [("q", q), ("status", status), ("after", after.as_str())]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() {
        LIST.to_string()
    } else {
        format!("{LIST}?{query}")
    }
}

/// `GET /app/knowledge`: the articles, newest first, and the embedding progress.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Response> {
    let blank = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let q = blank(query.q);
    if q.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(Error::bad_request(
            "invalid_filter",
            "search for at most 200 characters",
        ));
    }
    let status = blank(query.status)
        .map(|s| ArticleStatus::parse(&s))
        .transpose()
        .map_err(|_| {
            Error::bad_request(
                "invalid_filter",
                "status must be one of draft, published, archived",
            )
        })?;
    let after = blank(query.after)
        .map(|id| {
            Uuid::parse_str(&id)
                .map_err(|_| Error::bad_request("invalid_filter", "after must be an article id"))
        })
        .transpose()?;
    let chrome = Chrome::new(&state, &ctx, "knowledge").await?;
    let filter = ArticleFilter {
        q: q.clone(),
        status,
        after,
        limit: LIMIT,
    };
    let articles = kb::list_articles(&state.knowledge, &ctx, &filter).await?;
    let progress = kb::embedding_status(&state.knowledge, &ctx).await?;

    let q = q.unwrap_or_default();
    let status = status.map(ArticleStatus::as_str).unwrap_or_default();
    let older_url = (articles.len() as i64 == LIMIT)
        .then(|| articles.last().map(|a| list_href(&q, status, Some(a.id))))
        .flatten();
    let rows = articles
        .into_iter()
        .map(|a| ArticleRow {
            id: a.id,
            href: article_href(a.id),
            status_label: status_label(&a.status),
            embedding_label: embedding_label(&a.embedding_status),
            embedding_error: a.embedding_error.unwrap_or_default(),
            updated: readable(a.updated_at),
            updated_iso: rfc3339(a.updated_at),
            title: a.title,
            status: a.status,
            embedding: a.embedding_status,
        })
        .collect();
    let empty = if q.is_empty() && status.is_empty() {
        "No articles yet.".to_string()
    } else {
        "No articles match these filters.".to_string()
    };
    let notice = query
        .deleted
        .is_some()
        .then(|| notice("success", "The article is deleted."));
    let progress = ProgressView::from(progress);
    Ok(render(&ListPage {
        chrome,
        can_manage: ctx.role.can(Permission::KnowledgeManage),
        notice,
        polling: progress.pending > 0,
        progress,
        refresh_url: list_href(&q, status, after),
        q,
        status: status.to_string(),
        statuses: ArticleStatus::ALL
            .iter()
            .map(|s| (s.as_str(), status_label(s.as_str())))
            .collect(),
        rows,
        older_url,
        empty,
    }))
}

// ---- One article ----

/// What the article page shows of a stored article, beside the form.
pub struct StoredView {
    pub id: Uuid,
    pub status_label: &'static str,
    pub embedding: String,
    pub embedding_label: &'static str,
    pub embedding_error: String,
    pub revision: i32,
    pub updated: String,
    pub updated_iso: String,
}

impl From<&ArticleView> for StoredView {
    fn from(a: &ArticleView) -> Self {
        StoredView {
            id: a.id,
            status_label: status_label(&a.status),
            embedding: a.embedding_status.clone(),
            embedding_label: embedding_label(&a.embedding_status),
            embedding_error: a.embedding_error.clone().unwrap_or_default(),
            revision: a.revision,
            updated: readable(a.updated_at),
            updated_iso: rfc3339(a.updated_at),
        }
    }
}

#[derive(Template)]
#[template(path = "web/knowledge_article.html")]
struct ArticlePage {
    chrome: Chrome,
    heading: String,
    can_manage: bool,
    notice: Option<Notice>,
    /// The stored article; `None` on the new-article form.
    stored: Option<StoredView>,
    /// Where the form posts.
    action: String,
    revision: Option<i32>,
    title: String,
    body: String,
    tags: String,
    status: String,
    statuses: Vec<(&'static str, &'static str)>,
    /// The body's Markdown as HTML, made safe by [`markdown`].
    preview: String,
}

impl ArticlePage {
    fn new(chrome: Chrome, can_manage: bool, stored: Option<&ArticleView>) -> Self {
        let statuses = ArticleStatus::ALL
            .iter()
            .map(|s| (s.as_str(), status_label(s.as_str())))
            .collect();
        match stored {
            Some(a) => ArticlePage {
                chrome,
                heading: a.title.clone(),
                can_manage,
                notice: None,
                stored: Some(StoredView::from(a)),
                action: article_href(a.id),
                revision: Some(a.revision),
                title: a.title.clone(),
                preview: markdown(&a.body),
                body: a.body.clone(),
                tags: a.tags.join(", "),
                status: a.status.clone(),
                statuses,
            },
            None => ArticlePage {
                chrome,
                heading: "New article".to_string(),
                can_manage,
                notice: None,
                stored: None,
                action: LIST.to_string(),
                revision: None,
                title: String::new(),
                body: String::new(),
                tags: String::new(),
                status: ArticleStatus::Published.as_str().to_string(),
                statuses,
                preview: String::new(),
            },
        }
    }

    /// The form again with what was typed (after a preview or a refusal).
    fn with_input(mut self, input: &ArticleForm) -> Self {
        self.title = input.title.clone();
        self.body = input.body();
        self.tags = input.tags.clone();
        self.status = input.status.clone();
        self.preview = markdown(&self.body);
        self
    }
}

#[derive(Deserialize)]
pub struct ArticleForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    status: String,
    /// The revision the form was opened at.
    #[serde(default)]
    revision: String,
    /// `preview` shows the form again with its preview (without JavaScript), else it saves.
    #[serde(default)]
    intent: String,
}

impl ArticleForm {
    /// Browsers send a textarea's line ends as CR LF.
    fn body(&self) -> String {
        self.body.replace("\r\n", "\n")
    }

    fn tags(&self) -> Vec<String> {
        self.tags.split(',').map(str::to_string).collect()
    }

    fn status(&self) -> Option<String> {
        Some(self.status.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn previewing(&self) -> bool {
        self.intent == "preview"
    }
}

/// The form shown again after a refusal: what was typed stays, the reason is said, the status
/// is the refusal's.
fn refused(mut page: ArticlePage, error: Error) -> Result<Response> {
    let refused = super::refusal(error)?;
    let message = if refused.status == StatusCode::CONFLICT {
        "Someone else changed this article since you opened it. Your text is kept below; \
         saving it again replaces their version."
            .to_string()
    } else {
        refused.message
    };
    page.notice = Some(notice("error", message));
    let mut response = render(&page);
    *response.status_mut() = refused.status;
    Ok(response)
}

/// `GET /app/knowledge/new`.
pub async fn new_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response> {
    let chrome = Chrome::new(&state, &ctx, "knowledge").await?;
    Ok(render(&ArticlePage::new(chrome, true, None)))
}

/// `POST /app/knowledge`: creates the article and opens it, or shows the form again.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(input): Form<ArticleForm>,
) -> Result<Response> {
    let chrome = Chrome::new(&state, &ctx, "knowledge").await?;
    let page = ArticlePage::new(chrome, true, None).with_input(&input);
    if input.previewing() {
        return Ok(render(&page));
    }
    let created = kb::create_article(
        &state.knowledge,
        &ctx,
        NewArticle {
            title: input.title.clone(),
            body: Some(input.body()),
            tags: Some(input.tags()),
            status: input.status(),
        },
    )
    .await;
    match created {
        Ok(article) => Ok(see_other(&format!("{}?saved=1", article_href(article.id)))),
        Err(error) => refused(page, error),
    }
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    /// Set by the redirect after a save, for its notice.
    saved: Option<String>,
}

/// `GET /app/knowledge/{article_id}`: the article, with its form for those who may edit it.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Query(query): Query<ShowQuery>,
) -> Result<Response> {
    let article = kb::article(&state.knowledge, &ctx, id).await?;
    let chrome = Chrome::new(&state, &ctx, "knowledge").await?;
    let can_manage = ctx.role.can(Permission::KnowledgeManage);
    let mut page = ArticlePage::new(chrome, can_manage, Some(&article));
    if query.saved.is_some() {
        page.notice = Some(notice(
            "success",
            if article.status == "published" {
                "Saved. The article is being embedded; the AI agent finds it once it is ready."
            } else {
                "Saved. Only published articles are offered to the AI agent."
            },
        ));
    }
    Ok(render(&page))
}

/// `POST /app/knowledge/{article_id}`: saves an edit, or shows the form again.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(input): Form<ArticleForm>,
) -> Result<Response> {
    let before = kb::article(&state.knowledge, &ctx, id).await?;
    let chrome = Chrome::new(&state, &ctx, "knowledge").await?;
    let mut page = ArticlePage::new(chrome, true, Some(&before)).with_input(&input);
    if input.previewing() {
        page.revision = input.revision.parse().ok().or(page.revision);
        return Ok(render(&page));
    }
    let Ok(expected) = input.revision.trim().parse::<i32>() else {
        return refused(
            page,
            Error::bad_request("invalid_form", "the form is incomplete: reload the page"),
        );
    };
    let updated = kb::update_article(
        &state.knowledge,
        &ctx,
        id,
        ArticleChanges {
            title: Some(input.title.clone()),
            body: Some(input.body()),
            tags: Some(input.tags()),
            status: input.status(),
        },
        Some(expected),
    )
    .await;
    match updated {
        Ok(article) => Ok(see_other(&format!("{}?saved=1", article_href(article.id)))),
        Err(error) => {
            // After a conflict the form carries the stored revision, so saving again is a
            // deliberate choice to replace the other edit.
            page.revision = Some(if matches!(error, Error::Conflict { .. }) {
                before.revision
            } else {
                expected
            });
            refused(page, error)
        }
    }
}

#[derive(Deserialize)]
pub struct PreviewForm {
    #[serde(default)]
    body: String,
}

#[derive(Template)]
#[template(path = "web/knowledge_preview.html")]
struct PreviewFragment {
    preview: String,
}

/// `POST /app/knowledge/preview`: the body's Markdown as the page shows it (htmx swaps it in).
pub async fn preview(Form(input): Form<PreviewForm>) -> Result<Response> {
    Ok(render(&PreviewFragment {
        preview: markdown(&input.body.replace("\r\n", "\n")),
    }))
}

#[derive(Template)]
#[template(path = "web/knowledge_delete.html")]
struct DeletePage {
    chrome: Chrome,
    id: Uuid,
    title: String,
}

/// `GET /app/knowledge/{article_id}/delete`: asks before deleting (a form, so no script).
pub async fn confirm_delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let article = kb::article(&state.knowledge, &ctx, id).await?;
    let chrome = Chrome::new(&state, &ctx, "knowledge").await?;
    Ok(render(&DeletePage {
        chrome,
        id,
        title: article.title,
    }))
}

/// `POST /app/knowledge/{article_id}/delete`: deletes the article and its vectors.
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    kb::delete_article(&state.knowledge, &ctx, id).await?;
    Ok(see_other(&format!("{LIST}?deleted=1")))
}

#[cfg(test)]
mod tests {
    use super::{markdown, ProgressView};
    use crate::knowledge::routes::EmbeddingProgress;

    fn progress(pending: i64, ready: i64, failed: i64, stale_chunks: i64) -> ProgressView {
        let articles = pending + ready + failed;
        ProgressView::from(EmbeddingProgress {
            articles,
            pending,
            ready,
            failed,
            chunks: ready * 2,
            stale_chunks,
            model: "local-hash-384".to_string(),
            progress: if articles == 0 {
                1.0
            } else {
                (ready + failed) as f64 / articles as f64
            },
        })
    }

    #[test]
    fn the_progress_says_whether_it_embeds_re_embeds_failed_or_is_done() {
        let reembedding = progress(3, 1, 0, 8);
        assert_eq!(reembedding.state, "reembedding");
        assert_eq!(
            reembedding.text,
            "Re-embedding with local-hash-384: 1 of 4 articles done."
        );
        assert_eq!(reembedding.percent, 25);
        assert_eq!(progress(2, 0, 0, 0).state, "embedding");
        let failed = progress(0, 2, 1, 0);
        assert_eq!(failed.state, "failed");
        assert!(failed.text.starts_with("1 article could not be embedded"));
        assert_eq!(progress(0, 0, 0, 0).state, "ready");
        assert_eq!(progress(0, 0, 0, 0).percent, 100);
    }

    #[test]
    fn markdown_renders_the_usual_formatting() {
        let html = markdown("# Returns\n\nYou have **30 days**. See [policy](https://example.com/p).\n\n- one\n- two");
        assert!(html.contains("<h1>Returns</h1>"), "{html}");
        assert!(html.contains("<strong>30 days</strong>"));
        assert!(html.contains("<a href=\"https://example.com/p\">policy</a>"));
        assert!(html.contains("<li>one</li>"));
    }

    #[test]
    fn raw_html_in_markdown_is_shown_as_text_never_passed_through() {
        for text in [
            "<script>alert(1)</script>",
            "Hello <script>alert(1)</script> there",
            "<div onclick=\"alert(1)\">x</div>",
            "<img src=x onerror=alert(1)>",
            "Inline <b onmouseover=alert(1)>bold</b>",
            "<!-- a comment --><iframe src=\"https://evil.example\"></iframe>",
        ] {
            let html = markdown(text);
            for tag in ["<script", "<div", "<img", "<b ", "<iframe", "<!--"] {
                assert!(!html.contains(tag), "{text:?} gave {html}");
            }
            assert!(html.contains("&lt;"), "{text:?} gave {html}");
        }
    }

    #[test]
    fn only_http_https_and_mailto_links_survive() {
        for text in [
            "[click](javascript:alert(1))",
            "[click](JavaScript:alert(1))",
            "[click]( javascript:alert(1))",
            "<javascript:alert(1)>",
            "[click](data:text/html;base64,PHNjcmlwdD4=)",
            "[click](vbscript:msgbox)",
            "[click][r]\n\n[r]: javascript:alert(1)",
            "![x](javascript:alert(1))",
            "[![x](https://example.com/i.png)](javascript:alert(1))",
        ] {
            let html = markdown(text);
            assert!(!html.contains("<a"), "{text:?} gave {html}");
            assert!(!html.contains("<img"), "{text:?} gave {html}");
            assert!(
                !html.to_lowercase().contains("href"),
                "{text:?} gave {html}"
            );
        }
        assert!(
            markdown("[m](mailto:help@example.com)").contains("href=\"mailto:help@example.com\"")
        );
        assert!(markdown("<https://example.com>").contains("href=\"https://example.com\""));
    }

    #[test]
    fn tables_carry_no_inline_style() {
        let html = markdown("| a | b |\n|:--|--:|\n| 1 | 2 |");
        assert!(html.contains("<table>"), "{html}");
        assert!(!html.contains("style"), "{html}");
    }
}
