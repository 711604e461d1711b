//! The links a shell keeps, one per peer ([`Links`]): which of two
//! connections between the same nodes wins ([`admit`], decided alike on
//! both sides), and the two tasks behind every link — a writer draining a
//! bounded outbox into the connection, and a reader turning what arrives
//! into the shell's events (and one final event when the connection ends).
//! The membership and chain shells both keep their links here.

use std::collections::BTreeMap;

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

/// What to do with a new connection to a peer a shell may already be
/// linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// No link yet: attach it.
    Attach,
    /// It wins the tie-break against the kept link: close that one, attach
    /// this one.
    Replace,
    /// The kept link wins: close this one.
    Refuse,
}

/// The tie-break when two nodes dial each other at once: the connection
/// dialled by the smaller node id wins, so both sides keep the same one.
/// Returns who dialled the new connection, and what to do with it.
pub(crate) fn admit<Id: Ord + Copy>(
    me: Id,
    peer: Id,
    outbound: bool,
    kept_initiator: Option<Id>,
) -> (Id, Admission) {
    let initiator = if outbound { me } else { peer };
    let admission = match kept_initiator {
        None => Admission::Attach,
        Some(kept) if initiator < kept => Admission::Replace,
        Some(_) => Admission::Refuse,
    };
    (initiator, admission)
}

/// A shell's links, one per peer, each with an id that tells its events
/// from those of a connection it replaced.
pub(crate) struct Links<Id> {
    by_peer: BTreeMap<Id, Link<Id>>,
    next_id: u64,
    /// Messages waiting to be written to one peer.
    outbox_max: usize,
}

impl<Id: Ord + Copy + Send + 'static> Links<Id> {
    pub(crate) fn new(outbox_max: usize) -> Links<Id> {
        Links {
            by_peer: BTreeMap::new(),
            next_id: 0,
            outbox_max,
        }
    }

    /// Applies [`admit`] to a new `connection` to `peer`: closes the
    /// losing connection (`context` names the shell in the close reason)
    /// and returns the winner's initiator when the new one must be
    /// attached, and whether it replaced a kept link.
    pub(crate) fn offer(
        &mut self,
        me: Id,
        peer: Id,
        outbound: bool,
        connection: &Connection,
        context: &str,
    ) -> Option<(Id, bool)> {
        let kept = self.by_peer.get(&peer).map(|link| link.initiator);
        match admit(me, peer, outbound, kept) {
            (initiator, Admission::Attach) => Some((initiator, false)),
            (initiator, Admission::Replace) => {
                if let Some(old) = self.by_peer.remove(&peer) {
                    old.connection
                        .close(&format!("{context}duplicate connection"));
                }
                Some((initiator, true))
            }
            (_, Admission::Refuse) => {
                connection.close(&format!("{context}duplicate connection"));
                None
            }
        }
    }

    /// Keeps `connection` as the link to `peer` and starts its tasks:
    /// `message(link id, bytes)` wraps what arrives, `closed(link id)` is
    /// sent once when it ends. Returns the link's id.
    pub(crate) fn attach<Ev, F>(
        &mut self,
        peer: Id,
        connection: Connection,
        initiator: Id,
        events: mpsc::Sender<Ev>,
        message: impl FnOnce(u64) -> F,
        closed: impl FnOnce(u64) -> Ev,
    ) -> u64
    where
        Ev: Send + 'static,
        F: Fn(Vec<u8>) -> Ev + Send + 'static,
    {
        let id = self.next_id;
        self.next_id += 1;
        let outbox = spawn_link(
            &connection,
            self.outbox_max,
            events,
            message(id),
            closed(id),
        );
        self.by_peer.insert(
            peer,
            Link {
                id,
                connection,
                initiator,
                outbox,
            },
        );
        id
    }

    pub(crate) fn get(&self, peer: &Id) -> Option<&Link<Id>> {
        self.by_peer.get(peer)
    }

    /// The link to `peer` if it is still the connection `link_id` (events
    /// of a replaced connection are stale).
    pub(crate) fn current(&self, peer: &Id, link_id: u64) -> Option<&Link<Id>> {
        self.by_peer.get(peer).filter(|link| link.id == link_id)
    }

    pub(crate) fn remove(&mut self, peer: &Id) -> Option<Link<Id>> {
        self.by_peer.remove(peer)
    }

    pub(crate) fn contains(&self, peer: &Id) -> bool {
        self.by_peer.contains_key(peer)
    }

    pub(crate) fn peers(&self) -> impl Iterator<Item = &Id> {
        self.by_peer.keys()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_peer.len()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_keep_the_connection_the_smaller_id_dialled() {
        let (small, large) = (1u8, 2u8);
        // Each side first accepted the other's dial, then its own dial
        // completes: the side that dialled with the smaller id wins on both.
        let small_side = admit(small, large, true, Some(large));
        let large_side = admit(large, small, true, Some(small));
        assert_eq!(small_side, (small, Admission::Replace));
        assert_eq!(large_side, (large, Admission::Refuse));
        // The other order: each side first completed its own dial.
        assert_eq!(
            admit(small, large, false, Some(small)),
            (large, Admission::Refuse)
        );
        assert_eq!(
            admit(large, small, false, Some(large)),
            (small, Admission::Replace)
        );
    }

    #[test]
    fn a_first_connection_is_attached_whoever_dialled() {
        assert_eq!(admit(5u8, 3, true, None), (5, Admission::Attach));
        assert_eq!(admit(5u8, 3, false, None), (3, Admission::Attach));
    }
}
