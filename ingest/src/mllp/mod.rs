//! HL7 v2 over MLLP (API.md, port 2575): many connections, many messages per connection, each
//! answered in order with an ACK that is `AA` only once the broker acknowledged its records.

pub use platform::mllp as frame;
mod receive;

use std::sync::Arc;

use frame::{Frame, FrameError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_io_timeout::TimeoutReader;
use tracing::Instrument;

pub use receive::{decode, Peer, Receiver};

/// Accept connections until `shutdown` turns true; a connection finishes the message it is
/// processing (publish and ACK) before it closes. At most `max_connections` are open: one more
/// is closed as soon as it is accepted.
/// Over TLS (`tls`), each connection's client certificate identifies its sender: a message is
/// taken only from the certificate its source registered (`Receiver::receive`).
pub async fn serve(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    tls: Option<Arc<platform::tls::TlsServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(platform::tls::TlsAcceptor::from);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "MLLP listening");
    }
    let slots = Arc::new(Semaphore::new(receiver.limits.mllp_max_connections));
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        tracing::debug!(%peer, "MLLP connection");
                        crate::metrics::mllp_connection_opened();
                        let receiver = receiver.clone();
                        let shutdown = for_connections.clone();
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let _ = stream.set_nodelay(true);
                            match acceptor {
                                None => connection(stream, Peer::Plain, receiver, shutdown).await,
                                Some(acceptor) => {
                                    let handshake = tokio::time::timeout(
                                        platform::tls::HANDSHAKE_TIMEOUT,
                                        acceptor.accept(stream),
                                    );
                                    match handshake.await {
                                        Ok(Ok(stream)) => {
                                            let peer = Peer::Tls {
                                                certificate_sha256: platform::tls::peer_fingerprint(
                                                    stream.get_ref().1,
                                                ),
                                            };
                                            connection(stream, peer, receiver, shutdown).await
                                        }
                                        _ => tracing::debug!(%peer, "MLLP TLS handshake failed"),
                                    }
                                }
                            }
                            crate::metrics::mllp_connection_closed();
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "MLLP connection refused: at the connection limit");
                        crate::metrics::mllp_refused(crate::metrics::Refusal::ConnectionLimit);
                        drop(stream);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn connection<S>(
    stream: S,
    peer: Peer,
    receiver: Arc<Receiver>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let idle = receiver.limits.mllp_idle;
    let (read, mut write) = tokio::io::split(stream);
    // The timer restarts with every byte received: a slow frame is not idle, a silent peer is.
    let mut read = TimeoutReader::new(read);
    read.set_timeout(Some(idle));
    let mut read = BufReader::new(Box::pin(read));
    let max = receiver.limits.mllp_max_frame_bytes;
    loop {
        let frame = tokio::select! {
            frame = frame::read(&mut read, max) => frame,
            _ = stopped(&mut shutdown) => return,
        };
        let ack = match frame {
            Ok(Some(Frame::Message(message))) => {
                // Each message starts a trace; its records carry it to the projector.
                let span = tracing::info_span!("mllp", trace_id = tracing::field::Empty);
                platform::telemetry::continue_trace(&span, None);
                receiver.receive(&message, &peer).instrument(span).await
            }
            Ok(Some(Frame::TooLarge { head })) => {
                crate::metrics::mllp_refused(crate::metrics::Refusal::FrameTooLarge);
                receiver.refuse_oversized(&head).await
            }
            Ok(None) => return,
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::debug!("MLLP connection idle: closed");
                crate::metrics::mllp_refused(crate::metrics::Refusal::IdleTimeout);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "MLLP connection dropped");
                return;
            }
        };
        let wrote = tokio::time::timeout(idle, write.write_all(&frame::wrap(ack.as_bytes()))).await;
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "MLLP ACK not delivered");
                return;
            }
            Err(_) => {
                tracing::warn!("MLLP ACK not delivered: the peer does not read");
                crate::metrics::mllp_refused(crate::metrics::Refusal::IdleTimeout);
                return;
            }
        }
    }
}

/// Resolves once shutdown was asked for (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
