//! Helpers shared by the runtime's integration tests.

use std::time::Duration;

/// An endless source: batch `n` holds the single record `n`, one every millisecond.
pub(crate) struct Endless;

/// The reader of [`Endless`].
pub(crate) struct EndlessReader(i64);

impl weir_runtime::Source for Endless {
    type Item = i64;
    type Reader = EndlessReader;
    fn name(&self) -> String {
        "endless".into()
    }
    fn reader(&self, _: usize, _: usize) -> weir_runtime::Result<EndlessReader> {
        Ok(EndlessReader(0))
    }
}

impl weir_runtime::SourceReader for EndlessReader {
    type Item = i64;
    async fn next_batch(&mut self) -> weir_runtime::Result<Option<weir_runtime::Batch<i64>>> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.0 += 1;
        Ok(Some(weir_runtime::Batch::new(vec![self.0])))
    }
}
