//! A small builder that turns `(name, labels, value)` triples into validated
//! [`Sample`]s, counting the ones that fail validation instead of
//! failing the whole collection.

use sentra_core::{Labels, MetricName, Sample, UnixMillis, Value};

/// Collects samples that all share one timestamp (the collection time).
#[derive(Debug)]
pub struct SampleSet {
    timestamp: UnixMillis,
    samples: Vec<Sample>,
    invalid: usize,
}

impl SampleSet {
    /// An empty set whose samples will carry `timestamp`.
    #[must_use]
    pub fn new(timestamp: UnixMillis) -> Self {
        Self {
            timestamp,
            samples: Vec::new(),
            invalid: 0,
        }
    }

    /// The timestamp given to every sample.
    #[must_use]
    pub fn timestamp(&self) -> UnixMillis {
        self.timestamp
    }

    /// Adds a gauge (a value that can go up and down, or a fractional cumulative total such
    /// as CPU seconds: the wire counter type is an integer).
    pub fn gauge(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, labels, Value::Gauge(value));
    }

    /// Adds an integer counter.
    pub fn counter(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.push(name, labels, Value::Counter(value));
    }

    fn push(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        let Ok(name) = MetricName::new(name) else {
            self.invalid += 1;
            return;
        };
        let Ok(labels) = Labels::from_pairs(labels.iter().copied()) else {
            self.invalid += 1;
            return;
        };
        self.samples
            .push(Sample::new(name, labels, self.timestamp, value));
    }

    /// Records that some input could not be turned into a sample (a malformed line).
    pub fn note_invalid(&mut self, n: usize) {
        self.invalid += n;
    }

    /// Number of samples and inputs rejected so far.
    #[must_use]
    pub fn invalid(&self) -> usize {
        self.invalid
    }

    /// Number of samples collected so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was collected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples collected so far.
    #[must_use]
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Takes the samples.
    #[must_use]
    pub fn into_samples(self) -> Vec<Sample> {
        self.samples
    }
}
