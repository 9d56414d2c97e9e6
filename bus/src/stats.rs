//! Counts read from the server, for benchmarks and checks that must prove a whole fleet is
//! in place: the consumers on `COXSWAIN_INTENTS` (one `agent-<cluster>` per running agent) and
//! how many intents the stream has stored.

use async_nats::jetstream;
use futures::StreamExt;
use proto::stream;

use crate::{Bus, BusError};

impl Bus {
    /// How many consumers `COXSWAIN_INTENTS` has, as the server counts them now.
    pub async fn intent_consumer_count(&self) -> Result<usize, BusError> {
        Ok(self.stats_intents_info().await?.state.consumer_count)
    }

    /// The names of every consumer on `COXSWAIN_INTENTS`, each agent's `agent-<cluster>`
    /// among them (paged through however many there are).
    pub async fn intent_consumer_names(&self) -> Result<Vec<String>, BusError> {
        let intents = self.stats_intents_stream().await?;
        let mut names = intents.consumer_names();
        let mut out = Vec::new();
        while let Some(name) = names.next().await {
            out.push(name.map_err(|e| BusError::Consumer {
                name: format!("{} (listing)", stream::INTENTS),
                source: Box::new(e),
            })?);
        }
        Ok(out)
    }

    /// The last sequence `COXSWAIN_INTENTS` has stored: it only grows, so the difference of
    /// two readings is how many intents were published between them.
    pub async fn intent_last_sequence(&self) -> Result<u64, BusError> {
        Ok(self.stats_intents_info().await?.state.last_sequence)
    }

    async fn stats_intents_stream(&self) -> Result<jetstream::stream::Stream, BusError> {
        self.js()
            .get_stream(stream::INTENTS)
            .await
            .map_err(|e| BusError::Open {
                kind: "stream",
                name: stream::INTENTS,
                source: Box::new(e),
            })
    }

    async fn stats_intents_info(&self) -> Result<jetstream::stream::Info, BusError> {
        self.stats_intents_stream()
            .await?
            .get_info()
            .await
            .map_err(|e| BusError::Open {
                kind: "stream",
                name: stream::INTENTS,
                source: Box::new(e),
            })
    }
}
