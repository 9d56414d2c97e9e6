//! NATS JetStream glue for Coxswain: connect, make sure the streams and buckets of the design
//! exist, publish messages with their headers and await the server's ack, and consume one
//! cluster's intents one message at a time with explicit acks.
//!
//! This crate knows the wire contract (`proto`) and NATS; it never talks to Kubernetes.

mod connect;
mod consumer;
mod error;
mod publish;
#[cfg(feature = "testing")]
pub mod testing;
mod topology;

pub use async_nats::jetstream::Context as JetStream;
pub use connect::{ConnectOptions, connect};
pub use consumer::{ConsumerOptions, Delivery, IntentConsumer, latest_intent_sequence};
pub use error::BusError;
pub use publish::{Envelope, Published, publish, publish_intent, publish_outcome};
pub use topology::{Topology, TopologyConfig, ensure_topology};
