//! WhatsApp Cloud API wire layer: what Meta sends us (webhook payloads and their
//! signature) and what we send Meta (the Graph API messages endpoint).
//!
//! Everything here is pure protocol (no database, no tenant, no queue) except [`send`], the
//! outbound job. The channel code that owns routes and storage calls in here at its edges:
//! [`signature::verify`] over the raw bytes first (SEC-9), then [`payload::parse`],
//! and [`client::GraphClient::send`] from [`send`], which owns retries.

pub mod client;
pub mod payload;
pub mod send;
pub mod signature;

pub use client::{
    BusinessNumber, ClientConfigError, ConfirmError, GraphClient, MediaSource, Outbound, SendError,
    Sent,
};
pub use payload::{
    parse, Attachment, Content, DeliveryStatus, Event, GraphErrorDetail, InboundMessage, MediaKind,
    PayloadError, StatusUpdate, SystemError, Webhook,
};
