//! HL7 v2 over MLLP (API.md, port 2575): many connections, many messages per connection, each
//! answered in order with an ACK that is `AA` only once the broker acknowledged its records.

mod frame;
mod receive;

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

pub use receive::Receiver;

/// Accept connections until `shutdown` turns true; a connection finishes the message it is
/// processing (publish and ACK) before it closes.
pub async fn serve(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "MLLP listening");
    }
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "MLLP connection");
                    tokio::spawn(connection(stream, receiver.clone(), for_connections.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn connection(
    stream: TcpStream,
    receiver: Arc<Receiver>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let frame = tokio::select! {
            frame = frame::read(&mut read, receiver.max_message_bytes) => frame,
            _ = stopped(&mut shutdown) => return,
        };
        let message = match frame {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "MLLP connection dropped");
                return;
            }
        };
        // Each message starts a trace; its records carry it to the projector.
        let span = tracing::info_span!("mllp", trace_id = tracing::field::Empty);
        platform::telemetry::continue_trace(&span, None);
        let ack = receiver.receive(&message).instrument(span).await;
        if let Err(e) = write.write_all(&frame::wrap(ack.as_bytes())).await {
            tracing::warn!(error = %e, "MLLP ACK not delivered");
            return;
        }
    }
}

/// Resolves once shutdown was asked for (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
