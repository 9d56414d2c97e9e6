//! W3C trace context across processes: a span continues the `traceparent` it was handed (a
//! CI job's, an HTTP header, a message header), and hands its own on. A context that is not
//! exported (no OTLP collector configured) still passes through unchanged, so a trace is not
//! cut by one process that does not export.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (HTTP and NATS) and the environment variable's lower-case name.
pub const TRACEPARENT: &str = "traceparent";

/// Whether `text` is a well-formed W3C `traceparent` of version 00 with non-zero ids
/// (`00-<32 hex>-<16 hex>-<2 hex>`); anything else is ignored where it is received.
pub fn is_valid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [version, trace, span, flags]
        if *version == "00" && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'))
}

/// Makes `span` a child of `traceparent`, when there is a valid one.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| is_valid(t)) else {
        return;
    };
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&Carrier(Some(traceparent.to_owned())))
    });
    let _ = span.set_parent(parent);
}

/// The `traceparent` to hand on from `span`: its own when it is exported, else `fallback`
/// (the one it continued), when valid.
pub fn traceparent_of(span: &tracing::Span, fallback: Option<&str>) -> Option<String> {
    let context = span.context();
    let mut carrier = Carrier(None);
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier
        .0
        .filter(|t| is_valid(t))
        .or_else(|| fallback.filter(|t| is_valid(t)).map(str::to_owned))
}

/// One `traceparent` value, read or written by the propagator.
struct Carrier(Option<String>);

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.0.as_deref()
        } else {
            None
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_valid() {
        assert!(is_valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_unexported_span_hands_on_what_it_continued() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracing::info_span!("x");
        continue_trace(&span, Some(tp));
        assert_eq!(traceparent_of(&span, Some(tp)).as_deref(), Some(tp));
        assert_eq!(traceparent_of(&span, Some("garbage")), None);
    }
}
