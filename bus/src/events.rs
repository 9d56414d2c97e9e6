//! Reading outcome events: a feed over `COXSWAIN_EVENTS` for a cluster and/or release, from a
//! point in time, each event decoded by its `Content-Type` and shown once (events are
//! delivered at least once; their ids de-duplicate them).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use proto::{Outcome, ReleaseSubject, header, stream};

use crate::{Bus, BusError};

/// How many event ids a feed remembers to drop repeats; a repeat comes within seconds of
/// the original, so a bounded memory is enough for a feed that runs for months.
const REMEMBERED_IDS: usize = 100_000;

/// Where a feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Only events stored after the feed opened.
    New,
    /// Every event still stored.
    All,
    /// Events stored at or after this time.
    Time(jiff::Timestamp),
}

/// Which events a feed reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this cluster's.
    pub cluster: Option<String>,
    /// Only this release's.
    pub release: Option<String>,
}

impl EventQuery {
    /// Every event of one release, on any cluster.
    pub fn release(release: &str) -> Self {
        Self {
            cluster: None,
            release: Some(release.to_owned()),
        }
    }

    /// Every event of one cluster.
    pub fn cluster(cluster: &str) -> Self {
        Self {
            cluster: Some(cluster.to_owned()),
            release: None,
        }
    }

    /// The subject filter; names are checked, so no wildcard can be injected.
    pub fn filter(&self) -> Result<String, BusError> {
        Ok(proto::event_filter(
            self.cluster.as_deref(),
            self.release.as_deref(),
        )?)
    }
}

/// Remembers the last `REMEMBERED_IDS` event ids.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Seen {
    /// `true` the first time an id is seen.
    fn first(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= REMEMBERED_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

/// A live, ordered feed of outcome events.
pub struct EventFeed {
    filter: String,
    messages: consumer::pull::Ordered,
    seen: Seen,
    pending_at_open: u64,
    /// The stream and the consumer's first name, to delete it once a backlog is read (the
    /// server would keep an idle ordered consumer for 30 s, and they count against limits).
    stream: jetstream::stream::Stream,
    consumer: String,
}

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFeed")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl EventFeed {
    /// Opens a feed of the events `query` matches, starting at `since`.
    pub async fn open(bus: &Bus, query: &EventQuery, since: Since) -> Result<Self, BusError> {
        let filter = query.filter()?;
        let events_error = |source: async_nats::Error| BusError::Events {
            filter: filter.clone(),
            source,
        };
        let deliver_policy = match since {
            Since::New => consumer::DeliverPolicy::New,
            Since::All => consumer::DeliverPolicy::All,
            Since::Time(at) => consumer::DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::parse_rfc3339(&at.to_string())
                    .map_err(events_error)?,
            },
        };
        let events = bus
            .js()
            .get_stream(stream::EVENTS)
            .await
            .map_err(|e| BusError::Missing {
                kind: "stream",
                name: stream::EVENTS,
                source: Box::new(e),
            })?;
        let feed = events
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| events_error(Box::new(e)))?;
        let pending_at_open = feed.cached_info().num_pending;
        let consumer = feed.cached_info().name.clone();
        let messages = feed
            .messages()
            .await
            .map_err(|e| events_error(Box::new(e)))?;
        Ok(Self {
            filter,
            messages,
            seen: Seen::default(),
            pending_at_open,
            stream: events,
            consumer,
        })
    }

    /// The next event not seen before; `Ok(None)` when the feed ended. Messages that are
    /// not outcome events, and repeats, are skipped.
    pub async fn next(&mut self) -> Result<Option<Outcome>, BusError> {
        Ok(self.next_with_subject().await?.map(|(_, event)| event))
    }

    /// Like `next`, with the cluster and release of the subject the event was published on:
    /// NATS permissions let an agent publish only on its own cluster's subjects, so this is
    /// the one cluster name in an event that its publisher cannot choose.
    pub async fn next_with_subject(
        &mut self,
    ) -> Result<Option<(ReleaseSubject, Outcome)>, BusError> {
        loop {
            match self.next_message().await? {
                None => return Ok(None),
                Some(Some(event)) => return Ok(Some(event)),
                Some(None) => {}
            }
        }
    }

    /// The next message: `Some(None)` when it is a repeat, no outcome event, or on a subject
    /// that is not an event subject.
    async fn next_message(
        &mut self,
    ) -> Result<Option<Option<(ReleaseSubject, Outcome)>>, BusError> {
        match self.messages.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(BusError::Events {
                filter: self.filter.clone(),
                source: Box::new(e),
            }),
            Some(Ok(message)) => {
                let subject = proto::parse_event_subject(message.subject.as_str()).ok();
                let event = decode(&message).filter(|e| self.seen.first(&e.event_id));
                Ok(Some(subject.zip(event)))
            }
        }
    }

    /// Every event stored when the feed opened, in stream order: reads exactly the backlog
    /// the server counted, waiting at most `patience` for any one message.
    pub async fn backlog(mut self, patience: Duration) -> Result<Vec<Outcome>, BusError> {
        let read = self.read_backlog(patience).await;
        // The consumer has served its purpose; a failure here only leaves it to expire.
        if let Err(error) = self.stream.delete_consumer(&self.consumer).await {
            tracing::debug!(%error, consumer = self.consumer, "backlog consumer left to expire");
        }
        read
    }

    async fn read_backlog(&mut self, patience: Duration) -> Result<Vec<Outcome>, BusError> {
        let mut out = Vec::new();
        for _ in 0..self.pending_at_open {
            match tokio::time::timeout(patience, self.next_message()).await {
                Ok(Ok(Some(event))) => out.extend(event.map(|(_, e)| e)),
                Ok(Ok(None)) => break,
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(BusError::Events {
                        filter: self.filter.clone(),
                        source: format!("no event within {patience:?} while reading the backlog")
                            .into(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Every event `query` matches that is stored now, in stream order, each once.
pub async fn stored_events(bus: &Bus, query: &EventQuery) -> Result<Vec<Outcome>, BusError> {
    EventFeed::open(bus, query, Since::All)
        .await?
        .backlog(Duration::from_secs(10))
        .await
}

fn decode(message: &jetstream::Message) -> Option<Outcome> {
    let content_type = message
        .headers
        .as_ref()
        .and_then(|h| h.get(header::CONTENT_TYPE))
        .map(|v| v.as_str());
    match proto::decode(content_type, &message.payload) {
        Ok(event) => Some(event),
        Err(error) => {
            tracing::warn!(subject = %message.subject, %error, "undecodable event skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_drops_repeats_and_forgets_the_oldest() {
        let mut seen = Seen::default();
        assert!(seen.first("a"));
        assert!(!seen.first("a"));
        for i in 0..REMEMBERED_IDS {
            seen.first(&i.to_string());
        }
        assert!(seen.first("a"), "the oldest id was forgotten");
        assert!(seen.order.len() <= REMEMBERED_IDS);
        assert_eq!(seen.order.len(), seen.ids.len());
    }
}
