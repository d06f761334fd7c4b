//! The stateless one-to-one operators: map, filter, flat_map, inspect, and the fallible maps whose
//! failures become dead letters.

use std::sync::Arc;

use crate::batch::Batch;
use crate::dead_letter::{DeadLetter, Traceable};
use crate::operator::{Collector, Operator};

pub(crate) struct Map<F>(pub(crate) Arc<F>);

impl<In, Out, F> Operator<In, Out> for Map<F>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(In) -> Out + Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Batch<In>, out: &mut Collector<Out>) {
        let f = &*self.0;
        let mut batch = batch;
        let timestamps = std::mem::take(&mut batch.timestamps);
        let records = std::mem::take(&mut batch.records).into_iter().map(f).collect();
        out.batch(batch.derive(records, timestamps));
    }
}

pub(crate) struct Filter<F>(pub(crate) Arc<F>);

impl<T, F> Operator<T, T> for Filter<F>
where
    T: Send + 'static,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) {
        let f = &*self.0;
        let mut batch = batch;
        if batch.timestamps.is_empty() {
            batch.records.retain(|r| f(r));
            out.batch(batch);
        } else {
            let (records, timestamps) = std::mem::take(&mut batch.records)
                .into_iter()
                .zip(std::mem::take(&mut batch.timestamps))
                .filter(|(r, _)| f(r))
                .unzip();
            out.batch(batch.derive(records, timestamps));
        }
    }
}

pub(crate) struct FlatMap<F>(pub(crate) Arc<F>);

impl<In, Out, I, F> Operator<In, Out> for FlatMap<F>
where
    In: Send + 'static,
    Out: Send + 'static,
    I: IntoIterator<Item = Out>,
    F: Fn(In) -> I + Send + Sync + 'static,
{
    fn process_batch(&mut self, mut batch: Batch<In>, out: &mut Collector<Out>) {
        let f = &*self.0;
        let mut records = Vec::with_capacity(batch.records.len());
        let mut timestamps = Vec::new();
        let input = std::mem::take(&mut batch.records);
        if batch.timestamps.is_empty() {
            for r in input {
                records.extend(f(r));
            }
        } else {
            for (r, ts) in input.into_iter().zip(std::mem::take(&mut batch.timestamps)) {
                records.extend(f(r));
                timestamps.resize(records.len(), ts);
            }
        }
        out.batch(batch.derive(records, timestamps));
    }
}

pub(crate) struct Inspect<F>(pub(crate) Arc<F>);

impl<T, F> Operator<T, T> for Inspect<F>
where
    T: Send + 'static,
    F: Fn(&T) + Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) {
        batch.records.iter().for_each(|r| (self.0)(r));
        out.batch(batch);
    }
}

/// A map that can fail: failures go to the dead-letter output with the record's origin, raw
/// payload and the error; the pipeline goes on.
pub(crate) struct TryMap<F> {
    pub(crate) f: Arc<F>,
    pub(crate) operator: Arc<str>,
}

impl<In, Out, E, F> Operator<In, Out> for TryMap<F>
where
    In: Traceable + Send + 'static,
    Out: Send + 'static,
    E: std::fmt::Display,
    F: Fn(&In) -> Result<Out, E> + Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Batch<In>, out: &mut Collector<Out>) {
        try_each(&self.operator, batch, out, &*self.f, |_, value| value);
    }
}

/// Applies `f` to every record of `batch`: emits `make(record, value)` for each success (with
/// the record's timestamp), and sends each failure to the dead letters as `operator`'s.
fn try_each<In, V, Out, E>(
    operator: &str,
    mut batch: Batch<In>,
    out: &mut Collector<Out>,
    f: &impl Fn(&In) -> Result<V, E>,
    make: impl Fn(In, V) -> Out,
) where
    In: Traceable,
    E: std::fmt::Display,
{
    let input = std::mem::take(&mut batch.records);
    let input_timestamps = std::mem::take(&mut batch.timestamps);
    let mut records = Vec::with_capacity(input.len());
    let mut timestamps = Vec::with_capacity(input_timestamps.len());
    for (i, r) in input.into_iter().enumerate() {
        match f(&r) {
            Ok(value) => {
                records.push(make(r, value));
                if let Some(ts) = input_timestamps.get(i) {
                    timestamps.push(*ts);
                }
            }
            Err(e) => out.dead_letter(DeadLetter {
                operator: operator.to_owned(),
                origin: r.origin(),
                payload: r.payload(),
                error: e.to_string(),
            }),
        }
    }
    out.batch(batch.derive(records, timestamps));
}

/// A value with the record it was made from, so a later fallible step can still say where the
/// value came from: made by [`Stream::try_map_traced`](crate::Stream::try_map_traced) (and a
/// connector's `parsed_traced`), it is [`Traceable`] as its record is (the record's origin and
/// raw payload), and it dereferences to the value, so closures and functions taking `&T` take
/// it as it is.
///
/// Keeping the record costs no allocation: it is moved along, not copied.
#[derive(Debug, Clone, PartialEq)]
pub struct Traced<R, T> {
    /// The record the value was made from.
    pub record: R,
    /// The value.
    pub value: T,
}

impl<R, T> Traced<R, T> {
    /// The value, without its record.
    pub fn into_value(self) -> T {
        self.value
    }
}

impl<R, T> std::ops::Deref for Traced<R, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<R: Traceable, T> Traceable for Traced<R, T> {
    /// The record's origin.
    fn origin(&self) -> String {
        self.record.origin()
    }
    /// The record's raw payload.
    fn payload(&self) -> String {
        self.record.payload()
    }
}

/// A map that can fail, and whose results keep their input record ([`Traced`]).
pub(crate) struct TryMapTraced<F> {
    pub(crate) f: Arc<F>,
    pub(crate) operator: Arc<str>,
}

impl<In, Out, E, F> Operator<In, Traced<In, Out>> for TryMapTraced<F>
where
    In: Traceable + Send + 'static,
    Out: Send + 'static,
    E: std::fmt::Display,
    F: Fn(&In) -> Result<Out, E> + Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Batch<In>, out: &mut Collector<Traced<In, Out>>) {
        try_each(&self.operator, batch, out, &*self.f, |record, value| Traced { record, value });
    }
}
