//! What the benchmark harness shares with its tests: the master patient index's test corpus.

pub mod mpi_corpus;
pub mod mpi_quality;
