//! NATS JetStream glue for Coxswain, and the only door to NATS: connect, make sure the streams
//! and buckets of the design exist, publish messages with their headers and await the
//! server's ack, consume one cluster's intents one message at a time with explicit acks, read
//! outcome events, and read and write the buckets through typed wrappers.
//!
//! Every other crate holds a `Bus` and these types; none names an `async_nats` type. This crate
//! knows the wire contract (`proto`) and NATS; it never talks to Kubernetes. `auth` holds who
//! may do what: the permissions nats-server enforces for each role.

pub mod auth;
mod buckets;
mod client;
mod connect;
mod consumer;
mod error;
pub mod events;
mod publish;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod topology;
pub mod trace;

pub use buckets::{
    Bundles, Conflict, Registry, ReleaseStates, RolloutChange, RolloutWatch, Rollouts,
};
pub use client::Bus;
pub use connect::{ConnectOptions, connect};
pub use consumer::{Backlog, ConsumerOptions, Delivery, IntentConsumer};
pub use error::BusError;
pub use events::{EventFeed, EventQuery, Since};
pub use publish::{Envelope, PendingPublish, Published};
pub use topology::{Topology, TopologyConfig};
