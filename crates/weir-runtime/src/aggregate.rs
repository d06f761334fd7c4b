//! Aggregators: `create / add / merge / finish`, as Flink's `AggregateFunction`.
//!
//! Built in: [`Count`], [`Sum`], [`Min`], [`Max`], [`Avg`], [`DistinctCount`],
//! [`ApproxDistinctCount`] (HyperLogLog), [`Quantile`]
//! (DDSketch: relative error 1 %), [`TopK`], [`First`], [`Last`], [`Reduce`]. A tuple of aggregators is an aggregator of
//! tuples, so `(Count, Avg::of(..), Quantile::of(0.99, ..))` computes all three in one pass. Any
//! type implementing [`Aggregator`] works the same way. [`Aggs`] makes the built-ins for a known
//! record type, so their closures need no type annotations (see
//! [`WindowedStream::aggregate_with`](crate::WindowedStream::aggregate_with)).
//!
//! A window fires only once it holds a record, so aggregates that always have a value there
//! ([`Min`], [`Max`], [`Avg`]) are plain values; those that can lack one are `Option`s:
//! [`Quantile`] (its values may all be NaN, which it skips), and [`First`], [`Last`] and
//! [`Reduce`], which keep any type (no default stands for "no record").

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sketches_ddsketch::{Config, DDSketch};

/// An incremental aggregation over records of type `T`.
///
/// The running state is serializable (serde): checkpoints save it, and a restored pipeline
/// merges it back. Values an aggregator keeps (distinct values, first/last values, top
/// records) are therefore owned serializable types (`String`, not `&str`).
///
/// # Implementing
///
/// `create` makes the state of no records, `add` folds one record in, `merge` folds another
/// state in (session windows merge, and states are merged in time order, earlier first), and
/// `finish` reads the result without consuming the state (a window with allowed lateness
/// fires again after more records). Here, the spread (largest minus smallest) of a value:
///
/// ```
/// use std::time::Duration;
///
/// use weir_runtime::{Aggregator, CollectSink, MemorySource, Pipeline, TumblingWindows, Watermarks};
///
/// /// Largest minus smallest of the value `f` extracts.
/// struct Spread<F>(F);
///
/// impl<T, F: Fn(&T) -> f64 + Send + Sync + 'static> Aggregator<T> for Spread<F> {
///     /// (smallest, largest) so far; `None` for no records.
///     type Acc = Option<(f64, f64)>;
///     type Output = f64;
///
///     fn create(&self) -> Self::Acc {
///         None
///     }
///
///     fn add(&self, acc: &mut Self::Acc, record: &T) {
///         let v = (self.0)(record);
///         self.merge(acc, Some((v, v)));
///     }
///
///     fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
///         *acc = match (*acc, other) {
///             (Some((lo, hi)), Some((l, h))) => Some((lo.min(l), hi.max(h))),
///             (a, b) => a.or(b),
///         };
///     }
///
///     fn finish(&self, acc: &Self::Acc) -> f64 {
///         acc.map_or(0.0, |(lo, hi)| hi - lo)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> weir_runtime::Result<()> {
/// let p = Pipeline::builder("spread").parallelism(1).handle_signals(false).build()?;
/// let out = CollectSink::new();
/// p.source(MemorySource::new(vec![(0i64, 20.5), (1_000, 18.0), (2_000, 23.0)]))
///     .assign_timestamps(|r| r.0, Watermarks::monotonic())
///     .key_by(|_| ())
///     .window(TumblingWindows::of(Duration::from_secs(60)))
///     .aggregate(Spread(|r: &(i64, f64)| r.1))
///     .sink(out.clone());
/// p.run().await?;
/// assert_eq!(out.take()[0].value, 5.0);
/// # Ok(())
/// # }
/// ```
pub trait Aggregator<T>: Send + Sync + 'static {
    /// The running state.
    type Acc: Send + Serialize + DeserializeOwned + 'static;
    /// The result.
    type Output: Send + 'static;
    /// A fresh state.
    fn create(&self) -> Self::Acc;
    /// Adds one record.
    fn add(&self, acc: &mut Self::Acc, record: &T);
    /// Merges another state into `acc` (session windows merge).
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// The result for a state.
    fn finish(&self, acc: &Self::Acc) -> Self::Output;
}

/// Number of records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl<T> Aggregator<T> for Count {
    type Acc = u64;
    type Output = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: &T) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn finish(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// Defines an aggregator over a value extracted from each record.
macro_rules! extractor {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<F, V> {
            f: F,
            _v: PhantomData<fn() -> V>,
        }

        impl<F, V> $name<F, V> {
            /// Aggregates the value `f` extracts from each record.
            pub fn of<T>(f: F) -> Self
            where
                F: Fn(&T) -> V,
            {
                $name { f, _v: PhantomData }
            }
        }
    };
}

extractor!(
    /// Sum of a numeric value.
    Sum
);
extractor!(
    /// Smallest value. A window that fires holds at least one record, so its result is a
    /// value, not an `Option`; the state of no records (only seen when calling
    /// [`Aggregator::finish`] on [`Aggregator::create`]'s state) finishes as `V::default()`.
    Min
);
extractor!(
    /// Largest value; as [`Min`], a value, `V::default()` for no records.
    Max
);
extractor!(
    /// Number of distinct values (exact).
    DistinctCount
);
extractor!(
    /// The value of the first record added.
    First
);
extractor!(
    /// The value of the last record added.
    Last
);

impl<T, F, V> Aggregator<T> for Sum<F, V>
where
    F: Fn(&T) -> V + Send + Sync + 'static,
    V: Copy + Default + std::ops::AddAssign + Send + Serialize + DeserializeOwned + 'static,
{
    type Acc = V;
    type Output = V;
    fn create(&self) -> V {
        V::default()
    }
    fn add(&self, acc: &mut V, record: &T) {
        *acc += (self.f)(record);
    }
    fn merge(&self, acc: &mut V, other: V) {
        *acc += other;
    }
    fn finish(&self, acc: &V) -> V {
        *acc
    }
}

macro_rules! extreme {
    ($name:ident, $keep:expr) => {
        impl<T, F, V> Aggregator<T> for $name<F, V>
        where
            F: Fn(&T) -> V + Send + Sync + 'static,
            V: Copy + Default + PartialOrd + Send + Serialize + DeserializeOwned + 'static,
        {
            // `Option`: merging needs to tell "no value yet" from a value equal to the default.
            type Acc = Option<V>;
            type Output = V;
            fn create(&self) -> Option<V> {
                None
            }
            fn add(&self, acc: &mut Option<V>, record: &T) {
                let v = (self.f)(record);
                self.merge(acc, Some(v));
            }
            fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
                let keep: fn(&V, &V) -> bool = $keep;
                *acc = match (*acc, other) {
                    (Some(a), Some(b)) => Some(if keep(&a, &b) { a } else { b }),
                    (a, b) => a.or(b),
                };
            }
            fn finish(&self, acc: &Option<V>) -> V {
                acc.unwrap_or_default()
            }
        }
    };
}

extreme!(Min, |a, b| a <= b);
extreme!(Max, |a, b| a >= b);

impl<T, F, V> Aggregator<T> for DistinctCount<F, V>
where
    F: Fn(&T) -> V + Send + Sync + 'static,
    V: Hash + Eq + Send + Serialize + DeserializeOwned + 'static,
{
    type Acc = HashSet<V>;
    type Output = u64;
    fn create(&self) -> HashSet<V> {
        HashSet::new()
    }
    fn add(&self, acc: &mut HashSet<V>, record: &T) {
        acc.insert((self.f)(record));
    }
    fn merge(&self, acc: &mut HashSet<V>, other: HashSet<V>) {
        acc.extend(other);
    }
    fn finish(&self, acc: &HashSet<V>) -> u64 {
        acc.len() as u64
    }
}

impl<T, F, V> Aggregator<T> for First<F, V>
where
    F: Fn(&T) -> V + Send + Sync + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    type Acc = Option<V>;
    type Output = Option<V>;
    fn create(&self) -> Option<V> {
        None
    }
    fn add(&self, acc: &mut Option<V>, record: &T) {
        if acc.is_none() {
            *acc = Some((self.f)(record));
        }
    }
    /// Keeps `acc`'s value: merged states are in time order, earlier first.
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        if acc.is_none() {
            *acc = other;
        }
    }
    fn finish(&self, acc: &Option<V>) -> Option<V> {
        acc.clone()
    }
}

impl<T, F, V> Aggregator<T> for Last<F, V>
where
    F: Fn(&T) -> V + Send + Sync + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    type Acc = Option<V>;
    type Output = Option<V>;
    fn create(&self) -> Option<V> {
        None
    }
    fn add(&self, acc: &mut Option<V>, record: &T) {
        *acc = Some((self.f)(record));
    }
    fn merge(&self, acc: &mut Option<V>, other: Option<V>) {
        if other.is_some() {
            *acc = other;
        }
    }
    fn finish(&self, acc: &Option<V>) -> Option<V> {
        acc.clone()
    }
}

/// Arithmetic mean of a value. A window that fires holds at least one record, so its result is
/// a number, not an `Option`; the state of no records finishes as NaN.
pub struct Avg<F> {
    f: F,
}

impl<F> Avg<F> {
    /// Averages the value `f` extracts from each record.
    pub fn of<T>(f: F) -> Self
    where
        F: Fn(&T) -> f64,
    {
        Avg { f }
    }
}

impl<T, F> Aggregator<T> for Avg<F>
where
    F: Fn(&T) -> f64 + Send + Sync + 'static,
{
    type Acc = (f64, u64);
    type Output = f64;
    fn create(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, u64), record: &T) {
        acc.0 += (self.f)(record);
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (f64, u64), other: (f64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn finish(&self, acc: &(f64, u64)) -> f64 {
        if acc.1 == 0 { f64::NAN } else { acc.0 / acc.1 as f64 }
    }
}

/// A quantile of a value, estimated with DDSketch (relative error 1 %; `None` for no records).
pub struct Quantile<F> {
    q: f64,
    f: F,
}

impl<F> Quantile<F> {
    /// The `q` quantile (0.0–1.0, clamped) of the value `f` extracts from each record; records
    /// for which `f` returns NaN are skipped, and a window without values yields `None`.
    pub fn of<T>(q: f64, f: F) -> Self
    where
        F: Fn(&T) -> f64,
    {
        Quantile { q: q.clamp(0.0, 1.0), f }
    }
}

impl<T, F> Aggregator<T> for Quantile<F>
where
    F: Fn(&T) -> f64 + Send + Sync + 'static,
{
    type Acc = DDSketch;
    type Output = Option<f64>;
    fn create(&self) -> DDSketch {
        DDSketch::new(Config::defaults())
    }
    fn add(&self, acc: &mut DDSketch, record: &T) {
        // NaN stands for "no value" (like SQL's NULL): skipped.
        let v = (self.f)(record);
        if !v.is_nan() {
            acc.add(v);
        }
    }
    fn merge(&self, acc: &mut DDSketch, other: DDSketch) {
        // Sketches built with the same configuration always merge.
        let _ = acc.merge(&other);
    }
    fn finish(&self, acc: &DDSketch) -> Option<f64> {
        acc.quantile(self.q).ok().flatten()
    }
}

/// The `n` records with the largest sort key, largest first: a per-window "top N" (e.g. the
/// 10 paths with most requests, as `(requests, Reverse(path))` to break ties by path). Keeps at
/// most `2n` records between compactions.
pub struct TopBy<F> {
    n: usize,
    key: F,
}

impl<F> TopBy<F> {
    /// The `n` records with the largest `key`.
    pub fn of<T, K>(n: usize, key: F) -> Self
    where
        F: Fn(&T) -> K,
        K: Ord,
    {
        TopBy { n, key }
    }

    fn compact<T, K: Ord>(&self, acc: &mut Vec<T>)
    where
        F: Fn(&T) -> K,
    {
        acc.sort_by_cached_key(|r| std::cmp::Reverse((self.key)(r)));
        acc.truncate(self.n);
    }
}

impl<T, K, F> Aggregator<T> for TopBy<F>
where
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
    K: Ord,
    F: Fn(&T) -> K + Send + Sync + 'static,
{
    type Acc = Vec<T>;
    type Output = Vec<T>;
    fn create(&self) -> Vec<T> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<T>, record: &T) {
        acc.push(record.clone());
        if acc.len() >= 2 * self.n.max(1) {
            self.compact(acc);
        }
    }
    fn merge(&self, acc: &mut Vec<T>, other: Vec<T>) {
        acc.extend(other);
        self.compact(acc);
    }
    fn finish(&self, acc: &Vec<T>) -> Vec<T> {
        let mut top = acc.clone();
        self.compact(&mut top);
        top
    }
}

/// Number of distinct values, estimated with a HyperLogLog++-style sketch (Cloudflare's
/// `cardinality-estimator`: exact up to a few values, then about 1.6 % standard error in 3 KiB
/// of state, however many values).
pub struct ApproxDistinctCount<F, V> {
    f: F,
    _v: PhantomData<fn() -> V>,
}

impl<F, V> ApproxDistinctCount<F, V> {
    /// Estimates the number of distinct values `f` extracts.
    pub fn of<T>(f: F) -> Self
    where
        F: Fn(&T) -> V,
    {
        ApproxDistinctCount { f, _v: PhantomData }
    }
}

impl<T, F, V> Aggregator<T> for ApproxDistinctCount<F, V>
where
    F: Fn(&T) -> V + Send + Sync + 'static,
    V: Hash + Send + 'static,
{
    type Acc = cardinality_estimator::CardinalityEstimator<V>;
    type Output = u64;
    fn create(&self) -> Self::Acc {
        cardinality_estimator::CardinalityEstimator::new()
    }
    fn add(&self, acc: &mut Self::Acc, record: &T) {
        acc.insert(&(self.f)(record));
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        acc.merge(&other);
    }
    fn finish(&self, acc: &Self::Acc) -> u64 {
        acc.estimate() as u64
    }
}

/// The `k` most frequent values with their counts, most frequent first (ties: smaller value
/// first). Exact: the state holds a count per distinct value.
pub struct TopK<F, V> {
    k: usize,
    f: F,
    _v: PhantomData<fn() -> V>,
}

impl<F, V> TopK<F, V> {
    /// The `k` most frequent values of what `f` extracts.
    pub fn of<T>(k: usize, f: F) -> Self
    where
        F: Fn(&T) -> V,
    {
        TopK { k, f, _v: PhantomData }
    }
}

impl<T, F, V> Aggregator<T> for TopK<F, V>
where
    F: Fn(&T) -> V + Send + Sync + 'static,
    V: Hash + Eq + Ord + Clone + Send + Serialize + DeserializeOwned + 'static,
{
    type Acc = HashMap<V, u64>;
    type Output = Vec<(V, u64)>;
    fn create(&self) -> HashMap<V, u64> {
        HashMap::new()
    }
    fn add(&self, acc: &mut HashMap<V, u64>, record: &T) {
        *acc.entry((self.f)(record)).or_insert(0) += 1;
    }
    fn merge(&self, acc: &mut HashMap<V, u64>, other: HashMap<V, u64>) {
        for (v, n) in other {
            *acc.entry(v).or_insert(0) += n;
        }
    }
    fn finish(&self, acc: &HashMap<V, u64>) -> Vec<(V, u64)> {
        let mut all: Vec<(V, u64)> = acc.iter().map(|(v, n)| (v.clone(), *n)).collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(self.k);
        all
    }
}

/// Folds the records of a window with `f(accumulated, next)`, starting from the first record
/// (`None` for no records). See [`WindowedStream::reduce`](crate::WindowedStream::reduce).
pub struct Reduce<F> {
    f: F,
}

impl<F> Reduce<F> {
    /// Reduces with `f`.
    pub fn with<T>(f: F) -> Self
    where
        F: Fn(T, &T) -> T,
    {
        Reduce { f }
    }
}

impl<T, F> Aggregator<T> for Reduce<F>
where
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
    F: Fn(T, &T) -> T + Send + Sync + 'static,
{
    type Acc = Option<T>;
    type Output = Option<T>;
    fn create(&self) -> Option<T> {
        None
    }
    fn add(&self, acc: &mut Option<T>, record: &T) {
        *acc = Some(match acc.take() {
            None => record.clone(),
            Some(a) => (self.f)(a, record),
        });
    }
    fn merge(&self, acc: &mut Option<T>, other: Option<T>) {
        *acc = match (acc.take(), other) {
            (Some(a), Some(b)) => Some((self.f)(a, &b)),
            (a, b) => a.or(b),
        };
    }
    fn finish(&self, acc: &Option<T>) -> Option<T> {
        acc.clone()
    }
}

/// Makes the built-in aggregators over records of type `T`, so extractor closures need no type
/// annotations: `T` is fixed once, by [`WindowedStream::aggregate_with`] or by naming it here
/// (`Aggs::<Access>::new()`). Each method is the aggregator's own constructor (`a.sum(f)` is
/// `Sum::of(f)`); combine them in a tuple to compute several in one pass.
///
/// [`WindowedStream::aggregate_with`]: crate::WindowedStream::aggregate_with
///
/// # Examples
///
/// ```
/// use weir_runtime::{Aggregator, Aggs};
///
/// struct Reading {
///     sensor: u32,
///     celsius: f64,
/// }
///
/// let agg = Aggs::<Reading>::new().build(|a| (a.count(), a.avg(|r| r.celsius), a.distinct_count(|r| r.sensor)));
/// let mut acc = agg.create();
/// agg.add(&mut acc, &Reading { sensor: 1, celsius: 20.0 });
/// agg.add(&mut acc, &Reading { sensor: 2, celsius: 22.0 });
/// assert_eq!(agg.finish(&acc), (2, 21.0, 2));
/// ```
pub struct Aggs<T>(PhantomData<fn(&T)>);

impl<T> std::fmt::Debug for Aggs<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Aggs").field(&std::any::type_name::<T>()).finish()
    }
}

impl<T> Clone for Aggs<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Aggs<T> {}

impl<T> Default for Aggs<T> {
    fn default() -> Self {
        Aggs(PhantomData)
    }
}

impl<T> Aggs<T> {
    /// The aggregators over `T`.
    pub fn new() -> Self {
        Aggs(PhantomData)
    }

    /// The aggregator `build` makes from these (a tuple of several, or one).
    pub fn build<A: Aggregator<T>>(self, build: impl FnOnce(Self) -> A) -> A {
        build(self)
    }

    /// [`Count`].
    pub fn count(self) -> Count {
        Count
    }

    /// [`Sum::of`]`(f)`.
    pub fn sum<V, F: Fn(&T) -> V>(self, f: F) -> Sum<F, V> {
        Sum::of(f)
    }

    /// [`Min::of`]`(f)`.
    pub fn min<V, F: Fn(&T) -> V>(self, f: F) -> Min<F, V> {
        Min::of(f)
    }

    /// [`Max::of`]`(f)`.
    pub fn max<V, F: Fn(&T) -> V>(self, f: F) -> Max<F, V> {
        Max::of(f)
    }

    /// [`Avg::of`]`(f)`.
    pub fn avg<F: Fn(&T) -> f64>(self, f: F) -> Avg<F> {
        Avg::of(f)
    }

    /// [`DistinctCount::of`]`(f)`.
    pub fn distinct_count<V, F: Fn(&T) -> V>(self, f: F) -> DistinctCount<F, V> {
        DistinctCount::of(f)
    }

    /// [`ApproxDistinctCount::of`]`(f)`.
    pub fn approx_distinct_count<V, F: Fn(&T) -> V>(self, f: F) -> ApproxDistinctCount<F, V> {
        ApproxDistinctCount::of(f)
    }

    /// [`Quantile::of`]`(q, f)`.
    pub fn quantile<F: Fn(&T) -> f64>(self, q: f64, f: F) -> Quantile<F> {
        Quantile::of(q, f)
    }

    /// [`First::of`]`(f)`.
    pub fn first<V, F: Fn(&T) -> V>(self, f: F) -> First<F, V> {
        First::of(f)
    }

    /// [`Last::of`]`(f)`.
    pub fn last<V, F: Fn(&T) -> V>(self, f: F) -> Last<F, V> {
        Last::of(f)
    }

    /// [`TopK::of`]`(k, f)`.
    pub fn top_k<V, F: Fn(&T) -> V>(self, k: usize, f: F) -> TopK<F, V> {
        TopK::of(k, f)
    }

    /// [`TopBy::of`]`(n, key)`.
    pub fn top_by<K: Ord, F: Fn(&T) -> K>(self, n: usize, key: F) -> TopBy<F> {
        TopBy::of(n, key)
    }

    /// [`Reduce::with`]`(f)`.
    pub fn reduce<F: Fn(T, &T) -> T>(self, f: F) -> Reduce<F> {
        Reduce::with(f)
    }
}

macro_rules! tuple_aggregator {
    ($($a:ident $i:tt),+) => {
        impl<T, $($a: Aggregator<T>),+> Aggregator<T> for ($($a,)+) {
            type Acc = ($($a::Acc,)+);
            type Output = ($($a::Output,)+);
            fn create(&self) -> Self::Acc {
                ($(self.$i.create(),)+)
            }
            fn add(&self, acc: &mut Self::Acc, record: &T) {
                $(self.$i.add(&mut acc.$i, record);)+
            }
            fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
                $(self.$i.merge(&mut acc.$i, other.$i);)+
            }
            fn finish(&self, acc: &Self::Acc) -> Self::Output {
                ($(self.$i.finish(&acc.$i),)+)
            }
        }
    };
}

tuple_aggregator!(A 0);
tuple_aggregator!(A 0, B 1);
tuple_aggregator!(A 0, B 1, C 2);
tuple_aggregator!(A 0, B 1, C 2, D 3);
tuple_aggregator!(A 0, B 1, C 2, D 3, E 4);
tuple_aggregator!(A 0, B 1, C 2, D 3, E 4, G 5);

#[cfg(test)]
mod tests {
    use super::*;

    fn fold<A: Aggregator<i64>>(agg: &A, values: &[i64]) -> A::Output {
        let mut acc = agg.create();
        for v in values {
            agg.add(&mut acc, v);
        }
        agg.finish(&acc)
    }

    #[test]
    fn built_ins_compute_what_they_say() {
        let v = [5i64, -2, 9, 9, 1];
        assert_eq!(fold(&Count, &v), 5);
        assert_eq!(fold(&Sum::of(|x: &i64| *x), &v), 22);
        assert_eq!(fold(&Min::of(|x: &i64| *x), &v), -2);
        assert_eq!(fold(&Max::of(|x: &i64| *x), &v), 9);
        assert_eq!(fold(&Avg::of(|x: &i64| *x as f64), &v), 4.4);
        assert_eq!(fold(&DistinctCount::of(|x: &i64| *x), &v), 4);
        assert_eq!(fold(&First::of(|x: &i64| *x), &v), Some(5));
        assert_eq!(fold(&Last::of(|x: &i64| *x), &v), Some(1));
        assert_eq!(fold(&Reduce::with(|a: i64, b: &i64| a.max(*b) * 2), &[1, 5, 3]), Some(20));
        assert_eq!(fold(&TopK::of(2, |x: &i64| *x), &[3, 1, 3, 2, 1, 3, 7]), vec![(3, 3), (1, 2)]);
        assert_eq!(fold(&TopK::of(2, |x: &i64| *x), &[9, 8]), vec![(8, 1), (9, 1)], "ties by value");
        assert_eq!(fold(&Min::of(|x: &i64| *x), &[]), 0, "no records: the default");
        assert!(fold(&Avg::of(|x: &i64| *x as f64), &[]).is_nan(), "no records: NaN");
    }

    #[test]
    fn top_by_keeps_the_largest_and_breaks_ties_by_the_key() {
        use std::cmp::Reverse;
        let v: Vec<i64> = (0..100).map(|i| (i * 37) % 101).collect();
        assert_eq!(fold(&TopBy::of(3, |x: &i64| *x), &v), vec![100, 99, 98]);
        // By value / 10, ties by the smaller value first.
        assert_eq!(fold(&TopBy::of(3, |x: &i64| (*x / 10, Reverse(*x))), &v), vec![100, 90, 91]);
        let top = TopBy::of(2, |x: &i64| *x);
        let (mut a, mut b) = (top.create(), top.create());
        [1, 7, 3].iter().for_each(|x| top.add(&mut a, x));
        [8, 2].iter().for_each(|x| top.add(&mut b, x));
        top.merge(&mut a, b);
        assert_eq!(top.finish(&a), vec![8, 7]);
        assert!(fold(&TopBy::of(0, |x: &i64| *x), &v).is_empty());
    }

    #[test]
    fn quantiles_skip_nan() {
        let q = Quantile::of(0.5, |x: &f64| *x);
        let mut acc = Aggregator::<f64>::create(&q);
        for x in [f64::NAN, 10.0, f64::NAN] {
            q.add(&mut acc, &x);
        }
        let p50 = q.finish(&acc).unwrap();
        assert!((p50 - 10.0).abs() <= 0.1, "{p50}");
        let mut empty = Aggregator::<f64>::create(&q);
        q.add(&mut empty, &f64::NAN);
        assert_eq!(q.finish(&empty), None);
    }

    #[test]
    fn merge_equals_adding_everything_to_one_state() {
        let agg = (
            Count,
            Sum::of(|x: &i64| *x),
            Min::of(|x: &i64| *x),
            Max::of(|x: &i64| *x),
            DistinctCount::of(|x: &i64| *x % 3),
        );
        let (a, b) = ([3i64, 8, 1], [7i64, 2]);
        let mut left = agg.create();
        a.iter().for_each(|x| agg.add(&mut left, x));
        let mut right = agg.create();
        b.iter().for_each(|x| agg.add(&mut right, x));
        agg.merge(&mut left, right);
        assert_eq!(agg.finish(&left), fold(&agg, &[3, 8, 1, 7, 2]));
    }

    #[test]
    fn approximate_distinct_count_is_exact_when_small_and_close_when_large() {
        let small: Vec<i64> = (0..5).chain(0..5).collect();
        assert_eq!(fold(&ApproxDistinctCount::of(|x: &i64| *x), &small), 5);
        let large: Vec<i64> = (0..100_000).map(|x| x % 50_000).collect();
        let est = fold(&ApproxDistinctCount::of(|x: &i64| *x), &large) as f64;
        assert!((est - 50_000.0).abs() / 50_000.0 < 0.05, "estimate {est}");
        // Merged sketches estimate the union.
        let agg = ApproxDistinctCount::of(|x: &i64| *x);
        let (mut a, mut b) = (agg.create(), agg.create());
        (0..3_000i64).for_each(|x| agg.add(&mut a, &x));
        (2_000..5_000i64).for_each(|x| agg.add(&mut b, &x));
        agg.merge(&mut a, b);
        let union = agg.finish(&a) as f64;
        assert!((union - 5_000.0).abs() / 5_000.0 < 0.05, "union {union}");
    }

    #[test]
    fn quantile_is_within_the_sketch_error() {
        let values: Vec<i64> = (1..=10_000).collect();
        let p99 = fold(&Quantile::of(0.99, |x: &i64| *x as f64), &values).unwrap();
        assert!((p99 - 9_900.0).abs() / 9_900.0 <= 0.02, "p99 {p99}");
    }
}
