//! WhatsApp, in one place: what Meta sends us (webhook payloads and their signature), the
//! webhook routes and the batched writer that stores their deliveries, what we send Meta (the
//! Graph API client and the send job), and the 24-hour service window both the send job and
//! the members' replies answer to ([`window`]).
//!
//! [`payload`], [`signature`] and [`client`] are pure protocol (no database, no tenant, no
//! queue). The routes and storage call them at their edges: [`webhook`] checks
//! [`signature::verify`] over the raw bytes first (SEC-9), then [`payload::parse`], and hands
//! the delivery to [`writer`]; [`send`] calls [`client::GraphClient::send`] and owns retries.

pub mod client;
pub mod payload;
pub mod send;
pub mod signature;
pub mod webhook;
pub mod window;
pub mod writer;

pub use client::{
    BusinessNumber, ClientConfigError, ConfirmError, GraphClient, MediaSource, Outbound, SendError,
    Sent,
};
pub use payload::{
    parse, Attachment, Content, Event, GraphErrorDetail, InboundMessage, MediaKind, PayloadError,
    ReportedStatus, StatusUpdate, SystemError, Webhook,
};
