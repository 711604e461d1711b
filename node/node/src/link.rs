//! The two tasks behind every link a shell keeps: a writer draining a
//! bounded outbox into the connection, and a reader turning what arrives
//! into the shell's events (and one final event when the connection ends).

use bytes::Bytes;
use hm_stoq::Connection;
use tokio::sync::mpsc;

/// One connection a shell keeps to a peer identified by `Id`.
pub(crate) struct Link<Id> {
    /// Distinguishes this connection from an earlier one to the same peer,
    /// so events of a replaced connection are ignored.
    pub(crate) id: u64,
    pub(crate) connection: Connection,
    /// Who dialled: the connection dialled by the smaller node id wins when
    /// two nodes dial each other at once (both sides decide alike).
    pub(crate) initiator: Id,
    /// Shared buffers: one message to many peers is encoded once and
    /// never copied on the way into QUIC.
    pub(crate) outbox: mpsc::Sender<Bytes>,
}

/// Starts the writer and reader of `connection`; returns the outbox.
/// `message` wraps each received message, `closed` is sent once when the
/// connection fails or closes.
pub(crate) fn spawn_link<Ev, F>(
    connection: &Connection,
    outbox_max: usize,
    events: mpsc::Sender<Ev>,
    message: F,
    closed: Ev,
) -> mpsc::Sender<Bytes>
where
    Ev: Send + 'static,
    F: Fn(Vec<u8>) -> Ev + Send + 'static,
{
    let (outbox, mut outgoing) = mpsc::channel::<Bytes>(outbox_max);
    let writer = connection.clone();
    tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if let Err(error) = writer.send_message_shared(bytes).await {
                tracing::debug!(%error, "send failed; the reader reports the close");
                break;
            }
        }
    });
    let reader = connection.clone();
    tokio::spawn(async move {
        loop {
            match reader.recv_message().await {
                Ok(bytes) => {
                    if events.send(message(bytes)).await.is_err() {
                        break;
                    }
                }
                Err(_) => {
                    let _ = events.send(closed).await;
                    break;
                }
            }
        }
    });
    outbox
}
