//! The node's standard DNS front-end (`dns_listen` in the node config):
//! HyperMesh names answered to any stub resolver (`dig`, the system's
//! resolver) over UDP and TCP, from the node's committed TrustChain state.
//!
//! [`ZoneAuthority`] is a hickory-server request handler authoritative for
//! one zone (`mesh`):
//!
//! | question | answer |
//! |---|---|
//! | `AAAA` (or `ANY`) of a registered name | its addresses, TTL [`DNS_TTL_S`] |
//! | another type of a registered name | NOERROR, no data, the zone's SOA |
//! | a name under the zone not registered (or not a name TrustChain can hold) | NXDOMAIN, the zone's SOA |
//! | `SOA` (or `ANY`) of the zone itself | the zone's SOA (serial: the committed chain height) |
//! | another type of the zone itself | NOERROR, no data, the zone's SOA |
//! | a name outside the zone, a class other than IN, a zone transfer | REFUSED |
//! | anything before the node's chain state exists | SERVFAIL |
//! | an opcode other than QUERY | NOTIMP; more than one question: FORMERR |
//!
//! The answer is decided by [`decide`], a pure function over a
//! [`ZoneSource`] (the node's [`StatusHandle`] in production, a table in
//! tests), so the policy is tested without sockets. hickory-server owns the
//! wire: it parses every datagram and stream (malformed ones get FORMERR or
//! are dropped), and this module never sees raw bytes.
//!
//! Known gaps: empty non-terminals (`b.mesh` when only `a.b.mesh` is
//! registered) answer NXDOMAIN; a record is served as committed, whatever
//! has happened to its certificate since (as `ApiRequest::Resolve` does).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query};
use hickory_server::proto::rr::rdata::{AAAA, SOA};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hm_node::StatusHandle;
use hm_trustchain::name::DnsName;

pub use hickory_server::proto::op::ResponseCode;
pub use hickory_server::proto::rr::RecordType;

/// TTL of every answer: names move when nodes re-register, and resolvers
/// should come back soon. Also the SOA minimum (negative caching).
pub const DNS_TTL_S: u32 = 5;
/// A TCP client that sends no complete request for this long is dropped.
pub const DNS_TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection before the handler waits.
pub const DNS_TCP_RESPONSE_BUFFER: usize = 16;
/// Largest UDP answer [`ask`] reads.
const UDP_REPLY_BYTES_MAX: usize = 4_096;

/// What the node's state says about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameLookup {
    /// The node has no chain state yet (still booting).
    Unavailable,
    /// No committed record.
    Absent,
    /// The committed record's addresses.
    Present(Vec<Ipv6Addr>),
}

/// Where the authority reads names: the node's committed state.
pub trait ZoneSource: Send + Sync + Unpin + 'static {
    fn lookup(&self, name: &DnsName) -> NameLookup;
    /// The zone's SOA serial: changes whenever the state may have.
    fn serial(&self) -> u32;
}

/// Reads the committed TrustChain state the node shares through its status
/// handle (read lock held only for the lookup).
impl ZoneSource for StatusHandle {
    fn lookup(&self, name: &DnsName) -> NameLookup {
        let Some(trust) = self.trust() else {
            return NameLookup::Unavailable;
        };
        let record = trust.read().record(name);
        match record {
            Some(record) => NameLookup::Present(record.addrs),
            None => NameLookup::Absent,
        }
    }

    fn serial(&self) -> u32 {
        // SOA serials are compared modulo 2^32 (RFC 1982): truncation is
        // the intended wrap.
        self.with(|status| status.chain.height) as u32
    }
}

/// What one question is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// AAAA records for the asked name.
    Addresses(Vec<Ipv6Addr>),
    /// The zone's SOA record (asked at the apex).
    Soa,
    /// The name exists without records of the asked type.
    NoData,
    NxDomain,
    /// Not this server's to answer.
    Refused,
    /// The node cannot answer yet.
    ServFail,
}

/// The answer to `qname qclass qtype` for the zone `origin` (pure: the
/// whole policy of the module doc).
pub fn decide(
    origin: &LowerName,
    qname: &LowerName,
    qtype: RecordType,
    qclass: DNSClass,
    source: &impl ZoneSource,
) -> Answer {
    if !matches!(qclass, DNSClass::IN | DNSClass::ANY) || !origin.zone_of(qname) {
        return Answer::Refused;
    }
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Answer::Refused;
    }
    if qname == origin {
        return match qtype {
            RecordType::SOA | RecordType::ANY => Answer::Soa,
            _ => Answer::NoData,
        };
    }
    // `LowerName` prints escapes for bytes outside LDH, which `DnsName`
    // refuses: such a name cannot be registered, so it does not exist.
    let Ok(name) = DnsName::parse(&qname.to_string()) else {
        return Answer::NxDomain;
    };
    match source.lookup(&name) {
        NameLookup::Unavailable => Answer::ServFail,
        NameLookup::Absent => Answer::NxDomain,
        NameLookup::Present(addrs) => match qtype {
            RecordType::AAAA | RecordType::ANY if !addrs.is_empty() => Answer::Addresses(addrs),
            _ => Answer::NoData,
        },
    }
}

/// The authority for one zone; see the module doc.
pub struct ZoneAuthority<S> {
    origin: LowerName,
    /// The SOA's primary server and responsible mailbox.
    mname: Name,
    rname: Name,
    source: S,
}

/// A hickory name (fully qualified) from a TrustChain name.
fn fqdn(name: &DnsName) -> io::Result<Name> {
    let mut name = Name::from_ascii(name.as_str())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

impl<S: ZoneSource> ZoneAuthority<S> {
    /// Authoritative for `zone`; `server` (this node's own name, if it has
    /// one) is named as the zone's primary server in its SOA.
    pub fn new(zone: &DnsName, server: Option<&DnsName>, source: S) -> io::Result<Self> {
        let origin = fqdn(zone)?;
        let mname = match server {
            Some(server) => fqdn(server)?,
            None => origin.clone(),
        };
        let rname = Name::from_ascii("hostmaster")
            .and_then(|local| local.append_domain(&origin))
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))?;
        Ok(ZoneAuthority {
            origin: LowerName::new(&origin),
            mname,
            rname,
            source,
        })
    }

    fn soa(&self) -> Record {
        Record::from_rdata(
            Name::from(self.origin.clone()),
            DNS_TTL_S,
            RData::SOA(SOA::new(
                self.mname.clone(),
                self.rname.clone(),
                self.source.serial(),
                60,
                10,
                3_600,
                DNS_TTL_S,
            )),
        )
    }

    /// Response code and the answer and authority sections for one
    /// question (no await: the state's read lock never spans one).
    fn sections(
        &self,
        qname: &LowerName,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        match decide(&self.origin, qname, qtype, qclass, &self.source) {
            Answer::Addresses(addrs) => {
                let owner = Name::from(qname.clone());
                let answers = addrs
                    .into_iter()
                    .map(|addr| {
                        Record::from_rdata(owner.clone(), DNS_TTL_S, RData::AAAA(AAAA(addr)))
                    })
                    .collect();
                (ResponseCode::NoError, answers, Vec::new())
            }
            Answer::Soa => (ResponseCode::NoError, vec![self.soa()], Vec::new()),
            Answer::NoData => (ResponseCode::NoError, Vec::new(), vec![self.soa()]),
            Answer::NxDomain => (ResponseCode::NXDomain, Vec::new(), vec![self.soa()]),
            Answer::Refused => (ResponseCode::Refused, Vec::new(), Vec::new()),
            Answer::ServFail => (ResponseCode::ServFail, Vec::new(), Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl<S: ZoneSource> RequestHandler for ZoneAuthority<S> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // EDNS(0) as hickory's catalog does it: echo a version-0 OPT with
        // our payload size; a higher version is BADVERS (RFC 6891 §6.1.3).
        let mut edns = None;
        if let Some(asked) = request.edns.as_ref() {
            let mut ours = Edns::new();
            ours.set_max_payload(asked.max_payload().max(512));
            ours.set_version(0);
            edns = Some((ours, asked.version() > 0));
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let (code, answers, authorities) = if request.metadata.message_type != MessageType::Query {
            (ResponseCode::FormErr, Vec::new(), Vec::new())
        } else if let Some((_, true)) = edns {
            (ResponseCode::BADVERS, Vec::new(), Vec::new())
        } else if request.metadata.op_code != OpCode::Query {
            (ResponseCode::NotImp, Vec::new(), Vec::new())
        } else {
            match request.request_info() {
                // Not exactly one question.
                Err(_) => (ResponseCode::FormErr, Vec::new(), Vec::new()),
                Ok(info) => {
                    let query = info.query;
                    self.sections(query.name(), query.query_type(), query.query_class())
                }
            }
        };
        metadata.response_code = code;
        metadata.authoritative = matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
        let mut edns = edns.map(|(edns, _)| edns);
        if let Some(edns) = edns.as_mut() {
            // The upper 8 bits of an extended code (BADVERS) travel in OPT.
            edns.set_rcode_high(code.high());
        }
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "dns: cannot send the response");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_server::proto::op::Header {
                    metadata: failed,
                    counts: Default::default(),
                })
            }
        }
    }
}

/// A running DNS front-end; stops when dropped.
pub struct DnsServer<S: ZoneSource> {
    server: Server<ZoneAuthority<S>>,
    local_addr: SocketAddrV6,
}

impl<S: ZoneSource> DnsServer<S> {
    /// Serves `authority` on UDP and TCP at `listen` (IPv6 only; port 0
    /// picks a free UDP port and TCP takes the same). Must be called inside
    /// a tokio runtime.
    pub fn bind(listen: SocketAddrV6, authority: ZoneAuthority<S>) -> io::Result<Self> {
        if listen.ip().to_ipv4_mapped().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot serve DNS on {listen}: HyperMesh is IPv6-only"),
            ));
        }
        let udp = bind_v6(listen, socket2::Type::DGRAM, socket2::Protocol::UDP)?;
        let local_addr = match udp.local_addr()?.as_socket() {
            Some(SocketAddr::V6(local)) => local,
            _ => return Err(io::Error::other("the DNS socket has no IPv6 address")),
        };
        let tcp = bind_v6(local_addr, socket2::Type::STREAM, socket2::Protocol::TCP)?;
        tcp.listen(128)?;
        let udp = tokio::net::UdpSocket::from_std(udp.into())?;
        let tcp = tokio::net::TcpListener::from_std(tcp.into())?;
        let mut server = Server::new(authority);
        server.register_socket(udp);
        server.register_listener(tcp, DNS_TCP_TIMEOUT, DNS_TCP_RESPONSE_BUFFER);
        Ok(DnsServer { server, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local_addr
    }

    /// Serves until a listener fails (never, normally); the error says why.
    pub async fn run(mut self) -> io::Result<()> {
        self.server
            .block_until_done()
            .await
            .map_err(|error| io::Error::other(error.to_string()))
    }
}

/// A non-blocking IPv6-only socket bound to `addr`.
fn bind_v6(
    addr: SocketAddrV6,
    kind: socket2::Type,
    protocol: socket2::Protocol,
) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, kind, Some(protocol))?;
    socket.set_only_v6(true)?;
    socket.set_nonblocking(true)?;
    if kind == socket2::Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket
        .bind(&SocketAddr::V6(addr).into())
        .map_err(|error| io::Error::new(error.kind(), format!("cannot bind {addr}: {error}")))?;
    Ok(socket)
}

/// What a DNS server answered to one question (see [`ask`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub response_code: ResponseCode,
    pub authoritative: bool,
    /// AAAA records of the answer section.
    pub addrs: Vec<Ipv6Addr>,
    /// Records in the answer section of other types.
    pub other_answers: usize,
    /// Whether the authority section carries a SOA.
    pub soa: bool,
}

/// Asks `server` one question over UDP, like `dig @server name type`
/// (a minimal stub client for tests and diagnostics; no retries).
pub async fn ask(
    server: SocketAddrV6,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> io::Result<Reply> {
    let invalid = |error: String| io::Error::new(io::ErrorKind::InvalidData, error);
    let mut qname = Name::from_ascii(name).map_err(|error| invalid(error.to_string()))?;
    qname.set_fqdn(true);
    let mut message = Message::query();
    message.metadata.id = rand_id();
    message.add_query(Query::query(qname, qtype));
    let bytes = message
        .to_vec()
        .map_err(|error| invalid(error.to_string()))?;
    let socket = tokio::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await?;
    socket.connect(SocketAddr::V6(server)).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; UDP_REPLY_BYTES_MAX];
    let len = tokio::time::timeout(timeout, async {
        loop {
            let len = socket.recv(&mut buf).await?;
            // Skip strays: only the answer to our id counts.
            if len >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == message.metadata.id {
                return Ok::<_, io::Error>(len);
            }
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{server} did not answer")))??;
    let answer = Message::from_vec(&buf[..len]).map_err(|error| invalid(error.to_string()))?;
    let addrs = answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::AAAA(AAAA(addr)) => Some(*addr),
            _ => None,
        })
        .collect::<Vec<_>>();
    Ok(Reply {
        response_code: answer.metadata.response_code,
        authoritative: answer.metadata.authoritative,
        other_answers: answer.answers.len() - addrs.len(),
        addrs,
        soa: answer
            .authorities
            .iter()
            .any(|record| record.record_type() == RecordType::SOA),
    })
}

/// A query id from the OS RNG (ids should not be guessable).
fn rand_id() -> u16 {
    use hm_env::Entropy;
    (crate::OsEntropy.next_u64() & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A zone in memory; `None`: the node is still booting.
    #[derive(Clone, Default)]
    struct Table(Option<BTreeMap<String, Vec<Ipv6Addr>>>);

    impl Table {
        fn with(names: &[(&str, Ipv6Addr)]) -> Table {
            let map = names
                .iter()
                .map(|(name, addr)| (name.to_string(), vec![*addr]))
                .collect();
            Table(Some(map))
        }
    }

    impl ZoneSource for Table {
        fn lookup(&self, name: &DnsName) -> NameLookup {
            match &self.0 {
                None => NameLookup::Unavailable,
                Some(map) => match map.get(name.as_str()) {
                    Some(addrs) => NameLookup::Present(addrs.clone()),
                    None => NameLookup::Absent,
                },
            }
        }

        fn serial(&self) -> u32 {
            7
        }
    }

    fn lower(text: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(text).expect("test name"))
    }

    fn addr(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)
    }

    #[test]
    fn the_policy_table_of_the_module_doc() {
        let zone = lower("mesh.");
        let table = Table::with(&[("node1.mesh", addr(1)), ("a.b.mesh", addr(2))]);
        let ask = |name: &str, qtype| decide(&zone, &lower(name), qtype, DNSClass::IN, &table);
        assert_eq!(
            ask("node1.mesh.", RecordType::AAAA),
            Answer::Addresses(vec![addr(1)])
        );
        assert_eq!(
            ask("NODE1.Mesh.", RecordType::AAAA),
            Answer::Addresses(vec![addr(1)])
        );
        assert_eq!(
            ask("node1.mesh.", RecordType::ANY),
            Answer::Addresses(vec![addr(1)])
        );
        assert_eq!(
            ask("a.b.mesh.", RecordType::AAAA),
            Answer::Addresses(vec![addr(2)])
        );
        assert_eq!(ask("node1.mesh.", RecordType::A), Answer::NoData);
        assert_eq!(ask("node1.mesh.", RecordType::MX), Answer::NoData);
        assert_eq!(ask("node9.mesh.", RecordType::AAAA), Answer::NxDomain);
        assert_eq!(ask("x.node1.mesh.", RecordType::AAAA), Answer::NxDomain);
        assert_eq!(ask("mesh.", RecordType::SOA), Answer::Soa);
        assert_eq!(ask("mesh.", RecordType::ANY), Answer::Soa);
        assert_eq!(ask("mesh.", RecordType::AAAA), Answer::NoData);
        assert_eq!(ask("mesh.", RecordType::AXFR), Answer::Refused);
        assert_eq!(ask("node1.mesh.", RecordType::IXFR), Answer::Refused);
        assert_eq!(ask("example.com.", RecordType::AAAA), Answer::Refused);
        assert_eq!(ask("xmesh.", RecordType::AAAA), Answer::Refused);
        assert_eq!(ask(".", RecordType::SOA), Answer::Refused);
        assert_eq!(ask("mesh.example.", RecordType::AAAA), Answer::Refused);
        // Not an LDH name: TrustChain cannot hold it.
        assert_eq!(ask("_srv._tcp.mesh.", RecordType::AAAA), Answer::NxDomain);
        assert_eq!(
            decide(
                &zone,
                &lower("node1.mesh."),
                RecordType::AAAA,
                DNSClass::CH,
                &table
            ),
            Answer::Refused
        );
        let booting = Table::default();
        assert_eq!(
            decide(
                &zone,
                &lower("node1.mesh."),
                RecordType::AAAA,
                DNSClass::IN,
                &booting
            ),
            Answer::ServFail
        );
    }

    fn local(port: u16) -> SocketAddrV6 {
        SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0)
    }

    fn serve(table: Table) -> DnsServer<Table> {
        let zone = DnsName::parse("mesh").expect("zone");
        let me = DnsName::parse("node1.mesh").expect("name");
        let authority = ZoneAuthority::new(&zone, Some(&me), table).expect("authority");
        DnsServer::bind(local(0), authority).expect("bind [::1]:0")
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn answers_over_udp_and_survives_garbage() {
        let table = Table::with(&[("node1.mesh", Ipv6Addr::LOCALHOST)]);
        let server = serve(table.clone());
        let addr = server.local_addr();
        let running = tokio::spawn(server.run());

        let found = ask(addr, "node1.mesh", RecordType::AAAA, WAIT)
            .await
            .expect("answer");
        assert_eq!(found.response_code, ResponseCode::NoError);
        assert!(found.authoritative);
        assert_eq!(found.addrs, vec![Ipv6Addr::LOCALHOST]);
        let missing = ask(addr, "node9.mesh", RecordType::AAAA, WAIT)
            .await
            .expect("answer");
        assert_eq!(missing.response_code, ResponseCode::NXDomain);
        assert!(missing.soa && missing.addrs.is_empty());
        let outside = ask(addr, "example.com", RecordType::AAAA, WAIT)
            .await
            .expect("answer");
        assert_eq!(outside.response_code, ResponseCode::Refused);
        let soa = ask(addr, "mesh", RecordType::SOA, WAIT)
            .await
            .expect("answer");
        assert_eq!(
            (soa.response_code, soa.other_answers),
            (ResponseCode::NoError, 1)
        );

        // Hostile datagrams: short, random, a response, a huge question
        // count. None may take the server down.
        let socket = tokio::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let mut garbage: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0xff; 11],
            vec![0xff; 12],
            vec![0; 512],
            vec![0xab; 4_000],
        ];
        // A header claiming 65535 questions, then nothing.
        garbage.push(vec![0, 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        // A compression pointer that points at itself.
        garbage.push(vec![
            0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 28, 0, 1,
        ]);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..64 {
            let bytes = (0..len * 7)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            garbage.push(bytes);
        }
        for bytes in &garbage {
            socket
                .send_to(bytes, SocketAddr::V6(addr))
                .await
                .expect("send");
        }
        let after = ask(addr, "node1.mesh", RecordType::AAAA, WAIT)
            .await
            .expect("still answers after garbage");
        assert_eq!(after.addrs, vec![Ipv6Addr::LOCALHOST]);
        assert!(!running.is_finished());
        running.abort();
    }

    #[tokio::test]
    async fn answers_over_tcp_and_servfails_while_booting() {
        let server = serve(Table::default());
        let addr = server.local_addr();
        let running = tokio::spawn(server.run());
        let booting = ask(addr, "node1.mesh", RecordType::AAAA, WAIT)
            .await
            .expect("answer");
        assert_eq!(booting.response_code, ResponseCode::ServFail);

        // One TCP query: a two-byte length, then the message.
        let mut query = Message::query();
        query.metadata.id = 77;
        query.add_query(Query::query(
            Name::from_ascii("mesh.").expect("name"),
            RecordType::SOA,
        ));
        let bytes = query.to_vec().expect("encode");
        let mut stream = tokio::net::TcpStream::connect(SocketAddr::V6(addr))
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.expect("write");
        let mut len = [0u8; 2];
        tokio::time::timeout(WAIT, stream.read_exact(&mut len))
            .await
            .expect("in time")
            .expect("read");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.expect("read");
        let answer = Message::from_vec(&body).expect("decode");
        assert_eq!(answer.metadata.id, 77);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1);
        assert!(!running.is_finished());
        running.abort();
    }
}
