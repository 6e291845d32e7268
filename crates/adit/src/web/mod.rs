//! The control-room page: a read-only live view served by adit itself.
//!
//! - [`assets`]: the page (HTML, CSS, JS) embedded in the binary; works
//!   offline, no build step, no CDN;
//! - [`feed`]: the task that turns the live state into a stream of changes,
//!   rendered once for all clients;
//! - [`frames`]: the events' JSON, pure;
//! - [`trend`]: bounded sample rings behind the sparklines;
//! - [`events`]: `GET /events` (Server-Sent Events) and `GET /api/trends`;
//! - [`access`]: credentials for the page and `/api`, and the audit record
//!   of every access.
//!
//! Nothing here writes to a device: the page only reads.

pub mod access;
pub mod assets;
pub mod events;
pub mod feed;
pub mod frames;
pub mod trend;
