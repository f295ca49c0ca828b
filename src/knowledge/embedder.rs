//! How a tenant's texts become vectors: the built-in lexical embedder ([`super::embed`]), or a
//! provider's embeddings model. The knowledge base owns the choice, the vectors and what they
//! are compared by; the remote side is made by whoever owns the tenant's provider (the agent:
//! its settings, its client, and the guardrails that mask every text before it leaves, AGT-2)
//! and handed down as a [`Remote`]. So knowledge never names the provider, and the only road to
//! an embeddings API stays the one the remote side keeps (AGT-1).

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::embed::{embed_local, LOCAL_MODEL};
use super::Query;

/// The vectors of one embeddings call, one per input in input order, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens, when the provider reported them.
    pub tokens: Option<u32>,
    /// HTTP requests made, retries included.
    pub attempts: u32,
    pub latency: Duration,
}

impl Embedded {
    /// The first vector as a search query of `embedder`'s model.
    pub fn into_query<R: Remote + ?Sized>(mut self, embedder: &Embedder<R>) -> Query {
        Query::new(self.vectors.pop().unwrap_or_default(), embedder.model())
    }
}

/// Why a remote embedder gave no vectors. Its message is what the article's `embedding_error`
/// shows, so it holds nothing secret.
pub type EmbedError = Box<dyn std::error::Error + Send + Sync>;

/// A provider's embeddings model, as the knowledge base uses it.
pub trait Remote: Send + Sync {
    /// Knowledge passages, in the clear: the implementation masks them before they leave
    /// (AGT-2); the stored passages keep the real text, for quoting.
    fn embed_passages<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Embedded, EmbedError>>;

    /// The model name stored with each vector, and matched by search.
    fn model(&self) -> &str;

    /// Who computes the vectors (AGT-10): the provider's host.
    fn provider_name(&self) -> &str;
}

/// A remote embedder that also embeds a search query its owner masked: a customer's question is
/// masked with the conversation's vault, so the provider sees the placeholders the model sees.
/// `Masked` is the only form in which the owner lets a query leave.
pub trait RemoteQuery: Remote {
    type Masked;
    type Error;

    fn embed_query(
        &self,
        masked: Self::Masked,
    ) -> impl Future<Output = Result<Embedded, Self::Error>> + Send;
}

/// A tenant's embedder: the built-in one, which sends nothing anywhere and reads the text as it
/// is, or a provider's model. The knowledge base's routes and jobs hold it as a `dyn Remote`;
/// the agent's runtime keeps its own remote type, whose queries it masks itself.
pub enum Embedder<R: ?Sized = dyn Remote> {
    Local,
    Remote(Box<R>),
}

impl<R: Remote + ?Sized> Embedder<R> {
    /// Knowledge passages (or a query embedded like one, outside any conversation).
    pub async fn embed_passages(&self, texts: &[String]) -> Result<Embedded, EmbedError> {
        match self {
            Embedder::Local => Ok(local(texts.iter().map(String::as_str))),
            Embedder::Remote(remote) => remote.embed_passages(texts).await,
        }
    }

    /// The model name stored with each vector, and matched by search.
    pub fn model(&self) -> &str {
        match self {
            Embedder::Local => LOCAL_MODEL,
            Embedder::Remote(remote) => remote.model(),
        }
    }

    /// Who computes the vectors (AGT-10): the provider's host, or `None` for the built-in one.
    pub fn provider_name(&self) -> Option<&str> {
        match self {
            Embedder::Local => None,
            Embedder::Remote(remote) => Some(remote.provider_name()),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Embedder::Local)
    }
}

impl<R: RemoteQuery> Embedder<R> {
    /// A search query: the provider gets the masked text (masked by the caller's guard, with
    /// the conversation's vault when there is one), the built-in embedder the raw one.
    pub async fn embed_query(&self, raw: &str, masked: R::Masked) -> Result<Embedded, R::Error> {
        match self {
            Embedder::Local => Ok(local(std::iter::once(raw))),
            Embedder::Remote(remote) => remote.embed_query(masked).await,
        }
    }
}

impl<R: Remote + 'static> Embedder<R> {
    /// The same embedder as the knowledge base holds it, whatever its remote side is.
    pub fn into_dyn(self) -> Embedder {
        match self {
            Embedder::Local => Embedder::Local,
            Embedder::Remote(remote) => Embedder::Remote(remote),
        }
    }
}

fn local<'a>(texts: impl Iterator<Item = &'a str>) -> Embedded {
    let started = Instant::now();
    let vectors = texts.map(embed_local).collect();
    Embedded {
        vectors,
        tokens: None,
        attempts: 0,
        latency: started.elapsed(),
    }
}

/// What decides a tenant's vectors. Vectors of two embedders are never compared, so when this
/// changes the knowledge base is embedded again, and a vector is kept only if the embedder that
/// computed it is still the tenant's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderIdentity {
    /// The built-in lexical embedder.
    Local,
    /// A provider's model: where it is reached, its name, and the size asked of it (`None`: the
    /// model's own).
    Remote {
        base_url: String,
        model: String,
        dims: Option<i32>,
    },
}

impl EmbedderIdentity {
    /// The model name stored with each vector, and matched by search.
    pub fn model(&self) -> &str {
        match self {
            EmbedderIdentity::Local => LOCAL_MODEL,
            EmbedderIdentity::Remote { model, .. } => model,
        }
    }
}
