//! Requests to a consumer group's coordinator, asked again while the coordinator moves.
//!
//! A group's coordinator is the broker leading the group's partition of `__consumer_offsets`.
//! On a new cluster that topic is made by the first request for it, and whenever leadership
//! moves the group is loaded again: meanwhile brokers answer `NOT_COORDINATOR`,
//! `COORDINATOR_NOT_AVAILABLE` or `COORDINATOR_LOAD_IN_PROGRESS`. Kafka calls these errors
//! retriable, and its Java clients ask again; librdkafka's synchronous offset calls return them
//! to the caller instead. [`ask`] asks again until the request answers otherwise or
//! [`REQUEST_TIMEOUT`] passes, so a source or sink does not fail a job over a coordinator that
//! is settling.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};

use crate::source::REQUEST_TIMEOUT;

/// How long to wait before asking again.
const PAUSE: Duration = Duration::from_millis(50);

/// Runs `request` until it succeeds, fails with an error other than a moving coordinator, or
/// [`REQUEST_TIMEOUT`] has passed (then its last error is returned).
pub(crate) fn ask<T>(mut request: impl FnMut() -> KafkaResult<T>) -> KafkaResult<T> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        match request() {
            Err(e) if moving(&e) && Instant::now() < deadline => std::thread::sleep(PAUSE),
            result => return result,
        }
    }
}

/// Whether `e` says the group coordinator is not (yet) where the request went: being elected,
/// loading, or elsewhere. Asking again succeeds once it settles.
fn moving(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
        )
    )
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_moving_coordinator_is_asked_again_and_other_errors_are_returned_at_once() {
        let calls = Cell::new(0);
        let got = ask(|| {
            calls.set(calls.get() + 1);
            match calls.get() {
                1 => Err(KafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator)),
                2 => Err(KafkaError::MetadataFetch(RDKafkaErrorCode::CoordinatorLoadInProgress)),
                _ => Ok(7),
            }
        });
        assert_eq!((got.unwrap(), calls.get()), (7, 3));

        calls.set(0);
        let got: KafkaResult<()> = ask(|| {
            calls.set(calls.get() + 1);
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition))
        });
        assert!(got.is_err());
        assert_eq!(calls.get(), 1, "an error that is not the coordinator's is not asked again");
    }
}
