//! An identity-verified STOQ connection: framed messages, request/response,
//! datagrams, large-message sharding, statistics.
//!
//! Incoming streams are served by tasks that die with the connection. Every
//! read has a size limit checked before buffering and a deadline; every wait
//! ends when the connection closes. Received bytes not yet taken by the
//! application are charged to a per-connection byte budget; readers wait for
//! budget, which back-pressures the peer through QUIC flow control instead of
//! growing memory.
//!
//! A peer may re-authenticate a live connection with new identity bytes (a
//! `Reauth` uni stream, see [`crate::identity`]); that is just another stream,
//! so in-flight messages and requests are unaffected. The newest accepted
//! bytes are [`Connection::peer_extra`]; a refused one closes the connection.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hm_env::Clock;
use quinn::{
    ReadError, ReadExactError, ReadToEndError, RecvStream, SendStream, VarInt, WriteError,
};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::config::StoqConfig;
use crate::endpoint::EndpointCounters;
use crate::error::{IdentityError, StoqError};
use crate::frame::{
    CHUNK_HEADER_BYTES, ChunkHeader, FrameError, KIND_MESSAGE, KIND_REAUTH, KIND_REQUEST,
    LENGTH_BYTES, REAUTH_FRAME_BYTES_MAX, ReauthFrame, STATUS_OK, StreamKind, decode_length,
    decode_status, encode_prefixed_header,
};
use crate::identity::{PeerIdentity, PeerVerifier, node_id_hex};

/// Application close codes STOQ uses (QUIC CONNECTION_CLOSE, application space).
pub mod close_code {
    /// Closed by the application (`Connection::close`, or every handle dropped).
    pub const NORMAL: u32 = 0;
    /// The peer's identity binding (at the handshake or in a
    /// re-authentication) failed, or the verifier refused it.
    pub const IDENTITY_FAILED: u32 = 1;
    /// Malformed bytes on a stream (including a malformed re-authentication).
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// A frame announced more bytes than our limit.
    pub const FRAME_TOO_LARGE: u32 = 3;
    /// A large message was not complete within its deadline.
    pub const LARGE_MESSAGE_TIMEOUT: u32 = 4;
    /// The endpoint's accept queue was full.
    pub const BUSY: u32 = 5;
    /// The endpoint shut down.
    pub const ENDPOINT_CLOSED: u32 = 6;
}

/// Stream error codes (RESET_STREAM / STOP_SENDING).
pub mod stream_code {
    /// The peer was too slow to deliver one frame.
    pub const STREAM_TIMEOUT: u32 = 1;
    /// The request handler was dropped without answering.
    pub const NO_RESPONSE: u32 = 2;
}

/// Received messages queued for `recv_message` (bytes are bounded by the
/// byte budget; this bounds the count, e.g. of empty messages).
pub const INCOMING_MESSAGES_MAX: usize = 1024;
/// Received requests queued for `accept_request`.
pub const INCOMING_REQUESTS_MAX: usize = 256;
/// Streams one `send_large` writes at once: enough to fill the pipe, few
/// enough not to starve other traffic of the peer's stream credit.
pub const LARGE_SEND_STREAMS_PARALLEL: usize = 4;
/// Longest close reason we send; QUIC must fit it in one packet.
pub const CLOSE_REASON_BYTES_MAX: usize = 512;

/// Counters and path figures of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Smoothed round-trip time (quinn's estimate).
    pub rtt: Duration,
    pub lost_packets: u64,
    pub lost_bytes: u64,
    pub congestion_window_bytes: u64,
    pub udp_bytes_sent: u64,
    pub udp_bytes_received: u64,
    pub udp_datagrams_sent: u64,
    pub udp_datagrams_received: u64,
    /// QUIC STREAM frames, both directions.
    pub stream_frames_sent: u64,
    pub stream_frames_received: u64,
    /// Application messages (`send_message` and completed `send_large`).
    pub messages_sent: u64,
    pub messages_received: u64,
    pub message_bytes_sent: u64,
    pub message_bytes_received: u64,
    pub requests_sent: u64,
    pub requests_received: u64,
    pub responses_sent: u64,
    /// Unreliable datagrams (`send_datagram` / `recv_datagram`).
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// Re-authentications we sent on this connection ([`crate::Endpoint::present`]).
    pub reauths_sent: u64,
    /// The peer's re-authentications accepted (each a newer generation).
    pub reauths_accepted: u64,
    /// The peer's re-authentications refused (bad signature, other key,
    /// malformed, or refused by the verifier); each closes the connection.
    pub reauths_refused: u64,
    /// The peer's re-authentications ignored because a newer (or the same)
    /// generation was already accepted: reordered streams or replays.
    pub reauths_stale: u64,
}

#[derive(Debug, Default)]
struct Counters {
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    message_bytes_sent: AtomicU64,
    message_bytes_received: AtomicU64,
    requests_sent: AtomicU64,
    requests_received: AtomicU64,
    responses_sent: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_received: AtomicU64,
    reauths_sent: AtomicU64,
    reauths_accepted: AtomicU64,
    reauths_refused: AtomicU64,
    reauths_stale: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

pub(crate) use hm_env::sync::lock;

/// Limits copied from the config (one connection never sees a config change).
#[derive(Debug, Clone, Copy)]
struct Limits {
    frame_bytes_max: usize,
    large_message_bytes_max: usize,
    large_chunk_bytes: usize,
    large_message_timeout: Duration,
    stream_timeout: Duration,
}

/// Bytes received and waiting for the application, with their budget share.
struct Received {
    bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

/// One large message being put back together.
struct Assembly {
    total_len: u64,
    state: Mutex<AssemblyState>,
}

struct AssemblyState {
    buffer: Vec<u8>,
    /// Claimed byte ranges, start -> end. Disjoint; at most
    /// total_len / LARGE_CHUNK_BYTES_MIN + 1 entries (decoder rule).
    claimed: BTreeMap<u64, u64>,
    received_bytes: u64,
    permit: Option<OwnedSemaphorePermit>,
}

type AssemblySlot = Arc<OnceCell<Arc<Assembly>>>;

/// The peer's newest accepted identity bytes.
#[derive(Debug, Clone)]
struct PeerCurrent {
    /// 0: the handshake's bytes; else the generation of the re-authentication.
    generation: u64,
    extra: Arc<Vec<u8>>,
}

pub(crate) struct Shared {
    /// Negotiated ALPN protocol id.
    protocol: Vec<u8>,
    quic: quinn::Connection,
    /// The identity proven at the handshake; never changes.
    peer: PeerIdentity,
    /// The endpoint's verifier, asked again at each re-authentication.
    verifier: Arc<dyn PeerVerifier>,
    /// Newest accepted identity bytes; the watch serialises updates (only a
    /// newer generation replaces the value) and wakes waiters.
    current: watch::Sender<PeerCurrent>,
    remote: SocketAddrV6,
    clock: Arc<dyn Clock>,
    limits: Limits,
    budget: Arc<Semaphore>,
    messages: tokio::sync::Mutex<mpsc::Receiver<Received>>,
    requests: tokio::sync::Mutex<mpsc::Receiver<IncomingRequest>>,
    assemblies: Mutex<BTreeMap<u64, AssemblySlot>>,
    next_message_id: AtomicU64,
    counters: Counters,
    local_close_reason: Mutex<Option<String>>,
    endpoint_counters: Arc<EndpointCounters>,
}

/// The ALPN protocol a completed handshake settled on (rustls refuses a
/// client offering none of ours, so there is one).
pub(crate) fn negotiated_protocol(quic: &quinn::Connection) -> Vec<u8> {
    quic.handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .unwrap_or_default()
}

/// Why serving one stream stopped early.
enum Fault {
    /// The peer broke the protocol: close the connection.
    Violation { code: u32, reason: String },
    /// The peer was too slow with one frame: stop that stream only.
    Stalled,
    /// The stream or connection went away; nothing to do.
    Gone,
    /// A re-authentication failed (bad or refused identity, or a malformed
    /// frame): close the connection and count an identity failure.
    Identity { code: u32, reason: String },
}

impl From<FrameError> for Fault {
    fn from(error: FrameError) -> Self {
        let code = match error {
            FrameError::TooLarge { .. } => close_code::FRAME_TOO_LARGE,
            _ => close_code::PROTOCOL_VIOLATION,
        };
        Fault::Violation {
            code,
            reason: error.to_string(),
        }
    }
}

fn violation(reason: String) -> Fault {
    Fault::Violation {
        code: close_code::PROTOCOL_VIOLATION,
        reason,
    }
}

fn read_exact_fault(error: ReadExactError) -> Fault {
    match error {
        ReadExactError::FinishedEarly(read) => violation(format!(
            "stream ended inside a frame header after {read} bytes"
        )),
        // A reset is the peer cancelling; a lost connection is handled there.
        ReadExactError::ReadError(_) => Fault::Gone,
    }
}

fn read_to_end_fault(error: ReadToEndError, len: usize) -> Fault {
    match error {
        ReadToEndError::TooLong => violation(format!(
            "stream carried more than the {len} bytes its frame announced"
        )),
        ReadToEndError::Read(_) => Fault::Gone,
    }
}

/// A message body to write: borrowed (copied into QUIC's buffers) or a
/// shared buffer QUIC takes as it is.
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Shared(Bytes),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Borrowed(payload) => payload.len(),
            Payload::Shared(payload) => payload.len(),
        }
    }
}

pub(crate) fn write_error(error: WriteError) -> StoqError {
    match error {
        WriteError::ConnectionLost(error) => StoqError::Connection(error),
        other => StoqError::stream(other),
    }
}

fn truncated_reason(reason: &str) -> &[u8] {
    let mut end = reason.len().min(CLOSE_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Shared {
    /// Closes the connection because the peer broke the rules; logged and
    /// counted, with the reason sent to the peer.
    fn violation(&self, code: u32, reason: &str) {
        tracing::warn!(
            peer = %node_id_hex(&self.peer.node_id),
            remote = %self.remote,
            code,
            reason,
            "closing connection: the peer broke the STOQ protocol"
        );
        bump(&self.endpoint_counters.protocol_violations, 1);
        self.close_with(code, reason);
    }

    /// Closes the connection because the peer's re-authentication failed;
    /// logged and counted like a handshake refusal.
    fn identity_failure(&self, code: u32, reason: &str) {
        tracing::warn!(
            peer = %node_id_hex(&self.peer.node_id),
            remote = %self.remote,
            code,
            reason,
            "closing connection: the peer's re-authentication failed"
        );
        bump(&self.endpoint_counters.identity_failures, 1);
        bump(&self.endpoint_counters.reauths_refused, 1);
        bump(&self.counters.reauths_refused, 1);
        self.close_with(code, reason);
    }

    fn close_with(&self, code: u32, reason: &str) {
        lock(&self.local_close_reason).get_or_insert_with(|| reason.to_string());
        self.quic
            .close(VarInt::from_u32(code), truncated_reason(reason));
    }

    fn fault(&self, fault: Fault, recv: Option<&mut RecvStream>) {
        match fault {
            Fault::Violation { code, reason } => self.violation(code, &reason),
            Fault::Stalled => {
                tracing::debug!(remote = %self.remote, "stopping a stalled stream");
                if let Some(recv) = recv {
                    // Already closed is fine: the stream is gone either way.
                    let _ = recv.stop(VarInt::from_u32(stream_code::STREAM_TIMEOUT));
                }
            }
            Fault::Gone => {}
            Fault::Identity { code, reason } => self.identity_failure(code, &reason),
        }
    }

    /// Runs `future` until `deadline`, mapping expiry to `Fault::Stalled`.
    async fn before<F: Future>(&self, deadline: Instant, future: F) -> Result<F::Output, Fault> {
        let remaining = deadline.saturating_duration_since(self.clock.now());
        hm_env::timeout(&*self.clock, remaining, future)
            .await
            .map_err(|_| Fault::Stalled)
    }

    /// Takes `len_bytes` of the receive budget, waiting for the application
    /// to drain earlier messages; gives up when the connection closes.
    async fn reserve(&self, len_bytes: usize) -> Result<OwnedSemaphorePermit, Fault> {
        let permits = u32::try_from(len_bytes).map_err(|_| {
            Fault::from(FrameError::TooLarge {
                len_bytes: len_bytes as u64,
                len_bytes_max: u64::from(u32::MAX),
            })
        })?;
        tokio::select! {
            permit = self.budget.clone().acquire_many_owned(permits) => permit.map_err(|_| Fault::Gone),
            _ = self.quic.closed() => Err(Fault::Gone),
        }
    }

    async fn deliver<T>(&self, queue: &mpsc::Sender<T>, item: T) -> Result<(), Fault> {
        tokio::select! {
            sent = queue.send(item) => sent.map_err(|_| Fault::Gone),
            _ = self.quic.closed() => Err(Fault::Gone),
        }
    }

    /// Opens a uni stream and writes `header` and `payload`, within the
    /// stream deadline (a peer that stops granting credit cannot hold us).
    async fn write_uni(&self, header: &[u8], payload: Payload<'_>) -> Result<(), StoqError> {
        let timeout = self.limits.stream_timeout;
        let write = async {
            let mut send = self.quic.open_uni().await?;
            send.write_all(header).await.map_err(write_error)?;
            match payload {
                Payload::Borrowed(payload) => send.write_all(payload).await,
                // Handed to QUIC as it is: no copy.
                Payload::Shared(payload) => send.write_chunk(payload).await,
            }
            .map_err(write_error)?;
            send.finish().map_err(StoqError::stream)?;
            Ok::<(), StoqError>(())
        };
        hm_env::timeout(&*self.clock, timeout, write)
            .await
            .map_err(|_| StoqError::Timeout {
                timeout_ms: millis(timeout),
            })?
    }

    /// Closed (by either side or the transport): no more re-authentications.
    pub(crate) fn is_closed(&self) -> bool {
        self.quic.close_reason().is_some()
    }

    /// Sends one encoded [`ReauthFrame`] on its own uni stream. Counted;
    /// a failure is logged at debug and counted, never fatal.
    pub(crate) async fn send_reauth(&self, generation: u64, body: &[u8]) {
        debug_assert!(body.len() <= REAUTH_FRAME_BYTES_MAX);
        let header = encode_prefixed_header(KIND_REAUTH, body.len());
        match self.write_uni(&header, Payload::Borrowed(body)).await {
            Ok(()) => {
                bump(&self.counters.reauths_sent, 1);
                bump(&self.endpoint_counters.reauths_sent, 1);
            }
            Err(error) => {
                bump(&self.endpoint_counters.reauth_send_failures, 1);
                tracing::debug!(
                    peer = %node_id_hex(&self.peer.node_id),
                    remote = %self.remote,
                    generation,
                    %error,
                    "re-authentication not sent"
                );
            }
        }
    }

    fn closed_error(&self) -> StoqError {
        StoqError::Connection(
            self.quic
                .close_reason()
                .unwrap_or(quinn::ConnectionError::LocallyClosed),
        )
    }
}

/// Reads a kind byte or length prefix under the frame's deadline.
async fn read_header<const N: usize>(
    shared: &Shared,
    recv: &mut RecvStream,
    deadline: Instant,
) -> Result<[u8; N], Fault> {
    let mut bytes = [0u8; N];
    shared
        .before(deadline, recv.read_exact(&mut bytes))
        .await?
        .map_err(read_exact_fault)?;
    Ok(bytes)
}

/// Reads exactly `len` payload bytes that must end the stream.
async fn read_payload(
    shared: &Shared,
    recv: &mut RecvStream,
    len: usize,
    deadline: Instant,
) -> Result<Vec<u8>, Fault> {
    let payload = shared
        .before(deadline, recv.read_to_end(len))
        .await?
        .map_err(|error| read_to_end_fault(error, len))?;
    if payload.len() != len {
        return Err(violation(format!(
            "frame announced {len} bytes but the stream ended after {}",
            payload.len()
        )));
    }
    Ok(payload)
}

async fn accept_uni_loop(shared: Arc<Shared>, queue: mpsc::Sender<Received>) {
    // Ends when the connection closes; streams beyond the peer's concurrency
    // limit are never opened, so the spawned tasks are bounded by it.
    while let Ok(mut recv) = shared.quic.accept_uni().await {
        let shared = shared.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            if let Err(fault) = serve_uni(&shared, &mut recv, &queue).await {
                shared.fault(fault, Some(&mut recv));
            }
        });
    }
}

async fn serve_uni(
    shared: &Arc<Shared>,
    recv: &mut RecvStream,
    queue: &mpsc::Sender<Received>,
) -> Result<(), Fault> {
    let deadline = shared.clock.now() + shared.limits.stream_timeout;
    let [kind] = read_header::<1>(shared, recv, deadline).await?;
    match StreamKind::decode(kind)? {
        StreamKind::Message => {
            let prefix = read_header::<LENGTH_BYTES>(shared, recv, deadline).await?;
            let len = decode_length(prefix, shared.limits.frame_bytes_max)?;
            let permit = shared.reserve(len).await?;
            // Waiting for budget is our application's doing, not the peer's:
            // the payload gets a fresh deadline.
            let deadline = shared.clock.now() + shared.limits.stream_timeout;
            let bytes = read_payload(shared, recv, len, deadline).await?;
            shared
                .deliver(
                    queue,
                    Received {
                        bytes,
                        _permit: permit,
                    },
                )
                .await
        }
        StreamKind::Chunk => serve_chunk(shared, recv, queue, deadline).await,
        StreamKind::Reauth => serve_reauth(shared, recv, deadline).await,
        other => Err(violation(format!(
            "a {other:?} stream must be bidirectional"
        ))),
    }
}

/// Reads, checks and applies one re-authentication from the peer.
///
/// Not charged to the receive budget: it must not wait for the application
/// to drain messages, and it is bounded anyway (REAUTH_FRAME_BYTES_MAX per
/// stream, at most `max_concurrent_uni_streams` streams at once).
async fn serve_reauth(
    shared: &Arc<Shared>,
    recv: &mut RecvStream,
    deadline: Instant,
) -> Result<(), Fault> {
    let prefix = read_header::<LENGTH_BYTES>(shared, recv, deadline).await?;
    let len = decode_length(prefix, REAUTH_FRAME_BYTES_MAX)?;
    let body = read_payload(shared, recv, len, deadline).await?;
    let frame = ReauthFrame::decode(&body).map_err(|error| Fault::Identity {
        code: close_code::PROTOCOL_VIOLATION,
        reason: format!("malformed re-authentication: {error}"),
    })?;
    let generation = frame.generation;
    let refused = |error: IdentityError| Fault::Identity {
        code: close_code::IDENTITY_FAILED,
        reason: format!("re-authentication (generation {generation}) refused: {error}"),
    };
    // A genuine but older (or repeated) binding: two re-authentications'
    // streams can arrive out of order, and only the newest counts.
    let stale = |current: u64| -> Result<(), Fault> {
        bump(&shared.counters.reauths_stale, 1);
        bump(&shared.endpoint_counters.reauths_stale, 1);
        tracing::debug!(
            peer = %node_id_hex(&shared.peer.node_id),
            generation,
            current,
            "ignoring a stale re-authentication"
        );
        Ok(())
    };
    let current = shared.current.borrow().generation;
    if generation <= current {
        return stale(current);
    }
    let identity = PeerIdentity {
        node_id: shared.peer.node_id,
        public_key: shared.peer.public_key.clone(),
        extra: frame.extra,
        protocol: shared.protocol.clone(),
        reauthentication: true,
    };
    // Outside the lock: a verifier may take a while (certificate checks).
    shared.verifier.verify(&identity).map_err(|reason| {
        refused(IdentityError::Refused {
            node_id: node_id_hex(&identity.node_id),
            reason,
        })
    })?;
    let extra = Arc::new(identity.extra);
    let mut current = 0;
    let accepted = shared.current.send_if_modified(|now| {
        current = now.generation;
        if generation <= now.generation {
            return false;
        }
        *now = PeerCurrent {
            generation,
            extra: extra.clone(),
        };
        true
    });
    if !accepted {
        // A newer one was accepted while the verifier ran.
        return stale(current);
    }
    bump(&shared.counters.reauths_accepted, 1);
    bump(&shared.endpoint_counters.reauths_accepted, 1);
    tracing::debug!(
        peer = %node_id_hex(&shared.peer.node_id),
        remote = %shared.remote,
        generation,
        extra_bytes = extra.len(),
        "peer re-authenticated"
    );
    Ok(())
}

async fn serve_chunk(
    shared: &Arc<Shared>,
    recv: &mut RecvStream,
    queue: &mpsc::Sender<Received>,
    deadline: Instant,
) -> Result<(), Fault> {
    let bytes = read_header::<CHUNK_HEADER_BYTES>(shared, recv, deadline).await?;
    let header = ChunkHeader::decode(
        &bytes,
        shared.limits.large_message_bytes_max,
        shared.limits.frame_bytes_max,
    )?;
    let slot = lock(&shared.assemblies)
        .entry(header.message_id)
        .or_default()
        .clone();
    let assembly = slot
        .get_or_try_init(|| start_assembly(shared, header))
        .await?
        .clone();
    if assembly.total_len != header.total_len {
        return Err(violation(format!(
            "large message {} announced {} bytes, then {}",
            header.message_id, assembly.total_len, header.total_len
        )));
    }
    let start = header.offset;
    let end = start + u64::from(header.chunk_len);
    {
        let mut state = lock(&assembly.state);
        // Ranges are disjoint and sorted, so only the last one starting
        // before `end` can overlap [start, end).
        if let Some((&other_start, &other_end)) = state.claimed.range(..end).next_back()
            && other_end > start
        {
            return Err(violation(format!(
                "large message {}: chunk [{start}, {end}) overlaps [{other_start}, {other_end})",
                header.message_id
            )));
        }
        state.claimed.insert(start, end);
    }
    // A claimed range whose stream then fails never completes the message;
    // its deadline closes the connection, which frees everything.
    let chunk_len = header.chunk_len as usize;
    let mut written = 0usize;
    loop {
        let room = (chunk_len - written).max(1);
        let piece = shared
            .before(deadline, recv.read_chunk(room, true))
            .await?
            .map_err(|_: ReadError| Fault::Gone)?;
        let Some(piece) = piece else { break };
        if written + piece.bytes.len() > chunk_len {
            return Err(violation(format!(
                "large message {}: chunk carried more than its {chunk_len} bytes",
                header.message_id
            )));
        }
        let at = (start as usize) + written;
        lock(&assembly.state).buffer[at..at + piece.bytes.len()].copy_from_slice(&piece.bytes);
        written += piece.bytes.len();
    }
    if written != chunk_len {
        return Err(violation(format!(
            "large message {}: chunk announced {chunk_len} bytes, carried {written}",
            header.message_id
        )));
    }
    let complete = {
        let mut state = lock(&assembly.state);
        state.received_bytes += written as u64;
        debug_assert!(state.received_bytes <= assembly.total_len);
        if state.received_bytes == assembly.total_len {
            state
                .permit
                .take()
                .map(|permit| (std::mem::take(&mut state.buffer), permit))
        } else {
            None
        }
    };
    let Some((bytes, permit)) = complete else {
        return Ok(());
    };
    {
        let mut assemblies = lock(&shared.assemblies);
        if assemblies
            .get(&header.message_id)
            .is_some_and(|current| Arc::ptr_eq(current, &slot))
        {
            assemblies.remove(&header.message_id);
        }
    }
    shared
        .deliver(
            queue,
            Received {
                bytes,
                _permit: permit,
            },
        )
        .await
}

/// Reserves the whole message's budget at once (all-or-nothing, so two large
/// messages can never each hold half the budget and wait for the other) and
/// arms its completion deadline.
async fn start_assembly(shared: &Arc<Shared>, header: ChunkHeader) -> Result<Arc<Assembly>, Fault> {
    let total_len = usize::try_from(header.total_len).map_err(|_| {
        Fault::from(FrameError::TooLarge {
            len_bytes: header.total_len,
            len_bytes_max: shared.limits.large_message_bytes_max as u64,
        })
    })?;
    let permit = shared.reserve(total_len).await?;
    let assembly = Arc::new(Assembly {
        total_len: header.total_len,
        state: Mutex::new(AssemblyState {
            buffer: vec![0; total_len],
            claimed: BTreeMap::new(),
            received_bytes: 0,
            permit: Some(permit),
        }),
    });
    let deadline = shared.clock.now() + shared.limits.large_message_timeout;
    let watched = Arc::downgrade(&assembly);
    let weak_shared = Arc::downgrade(shared);
    let quic = shared.quic.clone();
    let clock = shared.clock.clone();
    let timeout_ms = millis(shared.limits.large_message_timeout);
    let message_id = header.message_id;
    tokio::spawn(async move {
        tokio::select! {
            () = clock.sleep_until(deadline) => {}
            _ = quic.closed() => return,
        }
        // Delivered messages are dropped from the table, so a live assembly
        // here is an incomplete one.
        if watched.upgrade().is_some()
            && let Some(shared) = Weak::upgrade(&weak_shared)
        {
            shared.violation(
                close_code::LARGE_MESSAGE_TIMEOUT,
                &format!("large message {message_id} incomplete after {timeout_ms} ms"),
            );
        }
    });
    Ok(assembly)
}

async fn accept_bi_loop(shared: Arc<Shared>, queue: mpsc::Sender<IncomingRequest>) {
    while let Ok((send, mut recv)) = shared.quic.accept_bi().await {
        let shared = shared.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            if let Err(fault) = serve_request(&shared, send, &mut recv, &queue).await {
                shared.fault(fault, Some(&mut recv));
            }
        });
    }
}

async fn serve_request(
    shared: &Arc<Shared>,
    send: SendStream,
    recv: &mut RecvStream,
    queue: &mpsc::Sender<IncomingRequest>,
) -> Result<(), Fault> {
    let deadline = shared.clock.now() + shared.limits.stream_timeout;
    let [kind] = read_header::<1>(shared, recv, deadline).await?;
    match StreamKind::decode(kind)? {
        StreamKind::Request => {}
        other => {
            return Err(violation(format!(
                "a {other:?} stream where a request was expected"
            )));
        }
    }
    let prefix = read_header::<LENGTH_BYTES>(shared, recv, deadline).await?;
    let len = decode_length(prefix, shared.limits.frame_bytes_max)?;
    let permit = shared.reserve(len).await?;
    let deadline = shared.clock.now() + shared.limits.stream_timeout;
    let payload = read_payload(shared, recv, len, deadline).await?;
    bump(&shared.counters.requests_received, 1);
    let request = IncomingRequest {
        payload,
        send: Some(send),
        shared: shared.clone(),
        _permit: permit,
    };
    shared.deliver(queue, request).await
}

/// Closes the connection when the application drops its last handle; the
/// serving tasks hold [`Shared`], not this, so they cannot keep it alive.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared
            .close_with(close_code::NORMAL, "connection dropped");
    }
}

/// A connection whose peer proved its FALCON identity. Cheap to clone; the
/// connection closes when the last clone is dropped or on [`Connection::close`].
///
/// Sent data is delivered while the connection stays open: closing right after
/// `send_message` may lose it. Use [`Connection::request`] for an answer that
/// proves receipt.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.handle.shared.peer)
            .field("remote", &self.handle.shared.remote)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Starts serving an identity-verified QUIC connection.
    pub(crate) fn start(
        quic: quinn::Connection,
        peer: PeerIdentity,
        clock: Arc<dyn Clock>,
        verifier: Arc<dyn PeerVerifier>,
        config: &StoqConfig,
        endpoint_counters: Arc<EndpointCounters>,
    ) -> Connection {
        let remote = match quic.remote_address() {
            SocketAddr::V6(v6) => v6,
            // Our sockets only deliver IPv6 sources; keep a faithful value anyway.
            SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        };
        let (messages_tx, messages_rx) = mpsc::channel(INCOMING_MESSAGES_MAX);
        let (requests_tx, requests_rx) = mpsc::channel(INCOMING_REQUESTS_MAX);
        let protocol = negotiated_protocol(&quic);
        let (current, _) = watch::channel(PeerCurrent {
            generation: 0,
            extra: Arc::new(peer.extra.clone()),
        });
        let shared = Arc::new(Shared {
            protocol,
            quic,
            peer,
            verifier,
            current,
            remote,
            clock,
            limits: Limits {
                frame_bytes_max: config.frame_bytes_max,
                large_message_bytes_max: config.large_message_bytes_max,
                large_chunk_bytes: config.large_chunk_bytes,
                large_message_timeout: Duration::from_millis(config.large_message_timeout_ms),
                stream_timeout: Duration::from_millis(config.stream_timeout_ms),
            },
            budget: Arc::new(Semaphore::new(config.receive_buffer_bytes_max)),
            messages: tokio::sync::Mutex::new(messages_rx),
            requests: tokio::sync::Mutex::new(requests_rx),
            assemblies: Mutex::new(BTreeMap::new()),
            next_message_id: AtomicU64::new(0),
            counters: Counters::default(),
            local_close_reason: Mutex::new(None),
            endpoint_counters,
        });
        tokio::spawn(accept_uni_loop(shared.clone(), messages_tx));
        tokio::spawn(accept_bi_loop(shared.clone(), requests_tx));
        Connection {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The serving state, for the endpoint's registry of live connections
    /// (which must not keep a connection open, hence weak).
    pub(crate) fn downgrade(&self) -> Weak<Shared> {
        Arc::downgrade(&self.handle.shared)
    }

    /// The peer's identity as proven at the handshake. Its `extra` is the
    /// handshake's bytes and never changes; the peer may later
    /// re-authenticate with new bytes: see [`Connection::peer_extra`].
    pub fn peer(&self) -> &PeerIdentity {
        &self.shared().peer
    }

    /// The peer's newest accepted identity bytes: the handshake's until the
    /// peer re-authenticates, then those of its newest re-authentication
    /// (signature checked, same key, accepted by the verifier).
    pub fn peer_extra(&self) -> Arc<Vec<u8>> {
        self.shared().current.borrow().extra.clone()
    }

    /// The generation of [`Connection::peer_extra`]: 0 for the handshake's
    /// bytes, else the generation the peer's endpoint gave the accepted
    /// re-authentication (increasing, not necessarily by one).
    pub fn peer_generation(&self) -> u64 {
        self.shared().current.borrow().generation
    }

    /// Waits until the peer's accepted generation is at least `at_least`;
    /// returns it (or the current one if the connection state went away).
    #[cfg(test)]
    pub(crate) async fn wait_peer_generation(&self, at_least: u64) -> u64 {
        let mut current = self.shared().current.subscribe();
        current
            .wait_for(|current| current.generation >= at_least)
            .await
            .map_or_else(|_| self.peer_generation(), |current| current.generation)
    }

    /// The application protocol (ALPN id) this connection was opened for.
    pub fn protocol(&self) -> &[u8] {
        &self.shared().protocol
    }

    pub fn remote_addr(&self) -> SocketAddrV6 {
        self.shared().remote
    }

    fn check_frame(&self, len: usize, len_max: usize) -> Result<(), StoqError> {
        if len > len_max {
            return Err(StoqError::MessageTooLarge {
                len_bytes: len as u64,
                len_bytes_max: len_max as u64,
            });
        }
        Ok(())
    }

    /// Sends one message on its own unidirectional stream. At most
    /// `frame_bytes_max`; larger ones go through [`Connection::send_large`].
    pub async fn send_message(&self, payload: &[u8]) -> Result<(), StoqError> {
        self.send_message_payload(Payload::Borrowed(payload)).await
    }

    /// [`Connection::send_message`] of a shared buffer, handed to QUIC
    /// without a copy: for one message sent to many peers.
    pub async fn send_message_shared(&self, payload: Bytes) -> Result<(), StoqError> {
        self.send_message_payload(Payload::Shared(payload)).await
    }

    async fn send_message_payload(&self, payload: Payload<'_>) -> Result<(), StoqError> {
        let shared = self.shared();
        let len = payload.len();
        self.check_frame(len, shared.limits.frame_bytes_max)?;
        let header = encode_prefixed_header(KIND_MESSAGE, len);
        self.write_uni(&header, payload).await?;
        bump(&shared.counters.messages_sent, 1);
        bump(&shared.counters.message_bytes_sent, len as u64);
        Ok(())
    }

    async fn write_uni(&self, header: &[u8], payload: Payload<'_>) -> Result<(), StoqError> {
        self.shared().write_uni(header, payload).await
    }

    /// Sends a message of up to `large_message_bytes_max`, cut into chunks of
    /// `large_chunk_bytes` on parallel streams; the peer reassembles it and
    /// hands it out through `recv_message` like any other message.
    pub async fn send_large(&self, payload: &[u8]) -> Result<(), StoqError> {
        let shared = self.shared();
        self.check_frame(payload.len(), shared.limits.large_message_bytes_max)?;
        if payload.len() <= shared.limits.large_chunk_bytes {
            return self.send_message(payload).await;
        }
        let message_id = shared.next_message_id.fetch_add(1, Ordering::Relaxed);
        let total_len = payload.len() as u64;
        futures::stream::iter(payload.chunks(shared.limits.large_chunk_bytes).enumerate())
            .map(|(index, chunk)| {
                let header = ChunkHeader {
                    message_id,
                    total_len,
                    offset: (index * shared.limits.large_chunk_bytes) as u64,
                    // chunk.len() <= large_chunk_bytes <= 1 GiB.
                    chunk_len: chunk.len() as u32,
                };
                async move {
                    self.write_uni(&header.encode(), Payload::Borrowed(chunk))
                        .await
                }
            })
            .buffer_unordered(LARGE_SEND_STREAMS_PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        bump(&shared.counters.messages_sent, 1);
        bump(&shared.counters.message_bytes_sent, total_len);
        Ok(())
    }

    /// The next message from the peer (small or reassembled large), in the
    /// order they completed. Errors once the connection is closed and every
    /// received message has been taken.
    pub async fn recv_message(&self) -> Result<Vec<u8>, StoqError> {
        let shared = self.shared();
        let received = shared.messages.lock().await.recv().await;
        match received {
            Some(received) => {
                bump(&shared.counters.messages_received, 1);
                bump(
                    &shared.counters.message_bytes_received,
                    received.bytes.len() as u64,
                );
                Ok(received.bytes)
            }
            None => Err(shared.closed_error()),
        }
    }

    /// Sends a request and waits for its response, all within `timeout`.
    pub async fn request(&self, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, StoqError> {
        let shared = self.shared();
        self.check_frame(payload.len(), shared.limits.frame_bytes_max)?;
        let exchange = async {
            let (mut send, mut recv) = shared.quic.open_bi().await?;
            let header = encode_prefixed_header(KIND_REQUEST, payload.len());
            send.write_all(&header).await.map_err(write_error)?;
            send.write_all(payload).await.map_err(write_error)?;
            send.finish().map_err(StoqError::stream)?;
            bump(&shared.counters.requests_sent, 1);
            let mut head = [0u8; 1 + LENGTH_BYTES];
            match recv.read_exact(&mut head).await {
                Ok(()) => {}
                Err(ReadExactError::ReadError(ReadError::Reset(code)))
                    if code == VarInt::from_u32(stream_code::NO_RESPONSE) =>
                {
                    return Err(StoqError::NoResponse);
                }
                Err(ReadExactError::ReadError(ReadError::ConnectionLost(error))) => {
                    return Err(StoqError::Connection(error));
                }
                Err(other) => return Err(StoqError::stream(other)),
            }
            let len = decode_status(head[0])
                .and_then(|()| {
                    let mut prefix = [0u8; LENGTH_BYTES];
                    prefix.copy_from_slice(&head[1..]);
                    decode_length(prefix, shared.limits.frame_bytes_max)
                })
                .inspect_err(|error| {
                    let code = match error {
                        FrameError::TooLarge { .. } => close_code::FRAME_TOO_LARGE,
                        _ => close_code::PROTOCOL_VIOLATION,
                    };
                    shared.violation(code, &error.to_string());
                })?;
            let body = recv.read_to_end(len).await.map_err(StoqError::stream)?;
            if body.len() != len {
                let reason = format!("response announced {len} bytes but carried {}", body.len());
                shared.violation(close_code::PROTOCOL_VIOLATION, &reason);
                return Err(StoqError::Stream(reason));
            }
            Ok(body)
        };
        hm_env::timeout(&*shared.clock, timeout, exchange)
            .await
            .map_err(|_| StoqError::Timeout {
                timeout_ms: millis(timeout),
            })?
    }

    /// The next request from the peer. `None` once the connection is closed
    /// and every received request has been taken.
    pub async fn accept_request(&self) -> Option<IncomingRequest> {
        self.shared().requests.lock().await.recv().await
    }

    /// Sends an unreliable datagram (RFC 9221); at most
    /// [`Connection::max_datagram_bytes`].
    pub fn send_datagram(&self, datagram: Bytes) -> Result<(), StoqError> {
        let shared = self.shared();
        shared
            .quic
            .send_datagram(datagram)
            .map_err(|error| StoqError::Datagram(error.to_string()))?;
        bump(&shared.counters.datagrams_sent, 1);
        Ok(())
    }

    /// The next datagram from the peer (quinn keeps a bounded buffer of them,
    /// `datagram_receive_buffer_bytes`, dropping the oldest).
    pub async fn recv_datagram(&self) -> Result<Bytes, StoqError> {
        let shared = self.shared();
        let datagram = shared.quic.read_datagram().await?;
        bump(&shared.counters.datagrams_received, 1);
        Ok(datagram)
    }

    /// Largest datagram the path and the peer allow now; `None` if the peer
    /// does not accept datagrams.
    pub fn max_datagram_bytes(&self) -> Option<usize> {
        self.shared().quic.max_datagram_size()
    }

    pub fn stats(&self) -> ConnectionStats {
        let shared = self.shared();
        let quic = shared.quic.stats();
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &shared.counters;
        ConnectionStats {
            rtt: quic.path.rtt,
            lost_packets: quic.path.lost_packets,
            lost_bytes: quic.path.lost_bytes,
            congestion_window_bytes: quic.path.cwnd,
            udp_bytes_sent: quic.udp_tx.bytes,
            udp_bytes_received: quic.udp_rx.bytes,
            udp_datagrams_sent: quic.udp_tx.datagrams,
            udp_datagrams_received: quic.udp_rx.datagrams,
            stream_frames_sent: quic.frame_tx.stream,
            stream_frames_received: quic.frame_rx.stream,
            messages_sent: get(&counters.messages_sent),
            messages_received: get(&counters.messages_received),
            message_bytes_sent: get(&counters.message_bytes_sent),
            message_bytes_received: get(&counters.message_bytes_received),
            requests_sent: get(&counters.requests_sent),
            requests_received: get(&counters.requests_received),
            responses_sent: get(&counters.responses_sent),
            datagrams_sent: get(&counters.datagrams_sent),
            datagrams_received: get(&counters.datagrams_received),
            reauths_sent: get(&counters.reauths_sent),
            reauths_accepted: get(&counters.reauths_accepted),
            reauths_refused: get(&counters.reauths_refused),
            reauths_stale: get(&counters.reauths_stale),
        }
    }

    /// Closes the connection now; the peer sees `reason`. Pending operations
    /// on both sides fail.
    pub fn close(&self, reason: &str) {
        self.shared().close_with(close_code::NORMAL, reason);
    }

    /// Closes the connection with `BUSY` (the endpoint is at a limit).
    pub(crate) fn close_busy(&self, reason: &str) {
        self.shared().close_with(close_code::BUSY, reason);
    }

    /// Waits until the connection is closed, for any reason.
    pub async fn closed(&self) -> StoqError {
        StoqError::Connection(self.shared().quic.closed().await)
    }

    /// Why the connection closed: the reason we gave if we closed it, else
    /// what the peer or transport reported. `None` while open.
    pub fn close_reason(&self) -> Option<String> {
        let shared = self.shared();
        if let Some(reason) = lock(&shared.local_close_reason).clone() {
            return Some(reason);
        }
        shared.quic.close_reason().map(|error| match error {
            quinn::ConnectionError::ApplicationClosed(close) => {
                String::from_utf8_lossy(&close.reason).into_owned()
            }
            other => other.to_string(),
        })
    }

    #[cfg(test)]
    pub(crate) fn quic(&self) -> &quinn::Connection {
        &self.shared().quic
    }
}

/// A request from the peer. Answer with [`IncomingRequest::respond`];
/// dropping it unanswered tells the requester at once ([`StoqError::NoResponse`]).
pub struct IncomingRequest {
    payload: Vec<u8>,
    send: Option<SendStream>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl IncomingRequest {
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload out (the request can still be answered).
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    /// The requester's identity as proven at the handshake (see
    /// [`Connection::peer`]).
    pub fn peer(&self) -> &PeerIdentity {
        &self.shared.peer
    }

    /// Sends the response (at most `frame_bytes_max`) within the stream deadline.
    pub async fn respond(mut self, response: &[u8]) -> Result<(), StoqError> {
        let shared = self.shared.clone();
        if response.len() > shared.limits.frame_bytes_max {
            return Err(StoqError::MessageTooLarge {
                len_bytes: response.len() as u64,
                len_bytes_max: shared.limits.frame_bytes_max as u64,
            });
        }
        let Some(mut send) = self.send.take() else {
            return Err(StoqError::Stream("request already answered".to_string()));
        };
        let header = encode_prefixed_header(STATUS_OK, response.len());
        let write = async {
            send.write_all(&header).await.map_err(write_error)?;
            send.write_all(response).await.map_err(write_error)?;
            send.finish().map_err(StoqError::stream)
        };
        let timeout = shared.limits.stream_timeout;
        hm_env::timeout(&*shared.clock, timeout, write)
            .await
            .map_err(|_| StoqError::Timeout {
                timeout_ms: millis(timeout),
            })??;
        bump(&shared.counters.responses_sent, 1);
        Ok(())
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            // Already closed is fine: the requester learns it either way.
            let _ = send.reset(VarInt::from_u32(stream_code::NO_RESPONSE));
        }
    }
}
