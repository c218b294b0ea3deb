//! Record-batch streams fed by a producer task (a file reader on a blocking thread, a database
//! cursor on the runtime), where the end of the stream must tell a finished producer from a
//! crashed one.
//!
//! ```text
//! producer task ──batches──▶ channel (2 deep) ──▶ stream ──▶ plan
//!        └── JoinHandle ─────── awaited when the channel closes: a panic becomes an error
//! ```
//!
//! Without the handle, a panic in the producer drops its sender and the consumer sees a closed
//! channel: the end of input. A run would then commit whatever arrived before the panic (or an
//! empty target) as a success. Here a closed channel is only the end of input once the task
//! is known to have returned normally.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

/// Batches in flight between a producer and its consumer (back pressure beyond this).
pub const CHANNEL_DEPTH: usize = 2;

/// The stream of what a producer task sends on `rx`, ending with an error naming `what` when
/// the task panicked (or was cancelled) instead of returning.
///
/// `what` names the producer for the message, e.g. ``"CSV reader of source `flights`"``.
pub fn stream(
    schema: SchemaRef,
    rx: Receiver<Result<RecordBatch>>,
    task: JoinHandle<()>,
    what: String,
) -> SendableRecordBatchStream {
    let state = (rx, Some(task), what);
    let s = futures::stream::unfold(state, |(mut rx, task, what)| async move {
        if let Some(item) = rx.recv().await {
            return Some((item, (rx, task, what)));
        }
        // The channel closed: every sender is gone. Find out why before ending the stream.
        let task = task?;
        match task.await {
            Ok(()) => None,
            Err(e) => {
                let why = if e.is_panic() {
                    format!("panicked: {}", panic_message(e.into_panic().as_ref()))
                } else {
                    "was cancelled".to_string()
                };
                let err = DataFusionError::Execution(format!(
                    "the {what} {why}; nothing was committed (this is a bug in Sluice: please report it with the input that caused it)"
                ));
                Some((Err(err), (rx, None, what)))
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, s))
}

/// Runs `work`, turning a panic inside it into [`Error::Internal`] naming `doing` and the
/// panic's message, so that a bug reached by some input fails the run instead of killing the
/// process after part of the work.
///
/// # Errors
/// `work`'s own error, or [`Error::Internal`] when it panicked.
pub async fn catch_panic<T>(
    work: impl std::future::Future<Output = crate::error::Result<T>>,
    doing: &str,
) -> crate::error::Result<T> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| {
            Err(crate::error::Error::Internal(format!(
                "panic while {doing}: {}",
                panic_message(p.as_ref())
            )))
        })
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Batches buffered between the run and the writer (bounds memory: ~8 × batch size rows).
const CHANNEL_BATCHES: usize = 8;

/// One partition of a streaming table whose batches arrive over a channel. Can be executed
/// once; a second execution yields an error.
struct ChannelPartition {
    schema: SchemaRef,
    receiver: Mutex<Option<mpsc::Receiver<RecordBatch>>>,
}

impl fmt::Debug for ChannelPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelPartition")
    }
}

impl PartitionStream for ChannelPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let receiver = self.receiver.lock().ok().and_then(|mut r| r.take());
        let stream =
            match receiver {
                Some(rx) => futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok(b), rx))
                })
                .boxed(),
                None => futures::stream::once(async {
                    Err(DataFusionError::Internal(
                        "channel partition executed twice".into(),
                    ))
                })
                .boxed(),
            };
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// A one-partition streaming table fed by the returned sender; it can be scanned once. Memory
/// is bounded by the channel (8 batches).
///
/// # Errors
/// [`crate::error::Error::Internal`] only on a schema inconsistency (a bug).
pub fn channel_table(
    schema: SchemaRef,
) -> crate::error::Result<(mpsc::Sender<RecordBatch>, StreamingTable)> {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let partition = Arc::new(ChannelPartition {
        schema: schema.clone(),
        receiver: Mutex::new(Some(rx)),
    });
    let table = StreamingTable::try_new(schema, vec![partition])
        .map_err(|e| crate::error::Error::Internal(format!("streaming table: {e}")))?;
    Ok((tx, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]))
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap()
    }

    #[tokio::test]
    async fn a_producer_that_returns_ends_the_stream() {
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
        let task = tokio::spawn(async move {
            let _ = tx.send(Ok(batch())).await;
        });
        let items: Vec<_> = stream(schema(), rx, task, "test".into()).collect().await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok());
    }

    #[tokio::test]
    async fn a_producer_that_panics_ends_the_stream_with_an_error() {
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            let _ = tx.blocking_send(Ok(batch()));
            panic!("offset overflow");
        });
        let items: Vec<_> = stream(schema(), rx, task, "CSV reader".into())
            .collect()
            .await;
        assert_eq!(items.len(), 2, "the batch, then the error");
        let err = items[1].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("CSV reader panicked: offset overflow"),
            "{err}"
        );
    }
}
