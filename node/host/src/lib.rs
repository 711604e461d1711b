#![doc = include_str!("../README.md")]
// This crate IS the real backend of the Env contract: it alone (with the
// simulator) may touch sockets, files, the OS clock and the OS RNG. The lints
// stay on everywhere else in the workspace.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[cfg(madsim)]
compile_error!(
    "hm-host is the real-OS backend and cannot be built with --cfg madsim; build the simulator with -p hm-sim"
);

pub mod disk;
pub mod dns;
pub mod hardware;
pub mod http;

/// The API client, the network and the entropy backends live in hm-client
/// (so the `hm` CLI builds without RocksDB); re-exported under their old
/// paths.
pub use hm_client::{api as client, entropy, net};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hm_env::{DiskError, Env, RuntimeClock};

pub use disk::RocksDisk;
pub use entropy::OsEntropy;
pub use hardware::HostHardware;
pub use net::{HostNet, HostSocket, NetTraffic, TrafficTotals};

/// The subdirectory of the data dir that RocksDB owns; the rest of the data
/// dir is free for other files (configuration, keys).
pub const DB_DIR_NAME: &str = "db";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "cannot create the data dir {path} or make it private (0700): {source}; check the path and that this user owns it"
    )]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the node's database: {0}")]
    Disk(#[from] DiskError),
}

/// The real-world [`Env`]: cheap to clone, every clone shares the same backends.
#[derive(Debug, Clone)]
pub struct HostEnv {
    inner: Arc<Backends>,
}

#[derive(Debug)]
struct Backends {
    clock: RuntimeClock,
    net: HostNet,
    disk: RocksDisk,
    hardware: HostHardware,
    entropy: OsEntropy,
    data_dir: PathBuf,
}

impl HostEnv {
    /// Creates `data_dir` if needed, makes it private to its owner (mode
    /// 0700: the database holds the node's identity key), and opens the
    /// database in `data_dir/`[`DB_DIR_NAME`] with `column_families`.
    pub fn open(data_dir: &Path, column_families: &[&'static str]) -> Result<Self, HostError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(data_dir)
            .and_then(|()| {
                std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|source| HostError::DataDir {
                path: data_dir.to_path_buf(),
                source,
            })?;
        let disk = RocksDisk::open(&data_dir.join(DB_DIR_NAME), column_families)?;
        Ok(Self {
            inner: Arc::new(Backends {
                clock: RuntimeClock,
                net: HostNet::default(),
                disk,
                hardware: HostHardware::new(data_dir),
                entropy: OsEntropy,
                data_dir: data_dir.to_path_buf(),
            }),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }
}

impl Env for HostEnv {
    type Clock = RuntimeClock;
    type Net = HostNet;
    type Disk = RocksDisk;
    type Hardware = HostHardware;
    type Entropy = OsEntropy;

    fn clock(&self) -> &RuntimeClock {
        &self.inner.clock
    }

    fn net(&self) -> &HostNet {
        &self.inner.net
    }

    fn disk(&self) -> &RocksDisk {
        &self.inner.disk
    }

    fn hardware(&self) -> &HostHardware {
        &self.inner.hardware
    }

    fn entropy(&self) -> &OsEntropy {
        &self.inner.entropy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::{Clock, DatagramSocket, Disk, Entropy, Hardware, Net, recv_from, send_to};
    use std::net::{Ipv6Addr, SocketAddrV6};
    use std::time::Duration;

    /// Generic over `Env`, as node code is: proves `HostEnv` plugs in.
    async fn exercise<E: Env>(env: &E) -> (Vec<u8>, u64) {
        env.disk().put_synced("meta", b"k", b"v").expect("put");
        let socket = env
            .net()
            .bind(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0))
            .expect("bind");
        send_to(&socket, socket.local_addr(), b"self")
            .await
            .expect("send");
        let mut buf = [0u8; 8];
        let (len, _) = recv_from(&socket, &mut buf).await.expect("recv");
        let started = env.clock().now();
        env.clock().sleep(Duration::from_millis(5)).await;
        assert!(env.clock().now() - started >= Duration::from_millis(5));
        assert!(env.hardware().inventory().cpu_cores >= 1);
        (buf[..len].to_vec(), env.entropy().below(1000))
    }

    #[tokio::test]
    async fn host_env_opens_a_data_dir_and_runs_generic_node_code() {
        let root = tempfile::tempdir().expect("tempdir");
        let data_dir = root.path().join("node-1");
        let env = HostEnv::open(&data_dir, &["meta"]).expect("open");
        let clone = env.clone();
        let (echo, draw) = exercise(&clone).await;
        assert_eq!(echo, b"self");
        assert!(draw < 1000);
        assert!(data_dir.join(DB_DIR_NAME).join("CURRENT").exists());
        assert_eq!(
            env.disk().get("meta", b"k").expect("get"),
            Some(b"v".to_vec())
        );
        assert!(env.clock().wall_ms() > 1_600_000_000_000);
    }

    #[test]
    fn a_second_open_of_the_same_data_dir_is_refused_while_the_first_lives() {
        let root = tempfile::tempdir().expect("tempdir");
        let _first = HostEnv::open(root.path(), &["meta"]).expect("open");
        let second = HostEnv::open(root.path(), &["meta"]);
        let error = second.expect_err("RocksDB's LOCK file must refuse a second opener");
        assert!(
            matches!(error, HostError::Disk(DiskError::Io(_))),
            "{error}"
        );
    }

    #[test]
    fn an_uncreatable_data_dir_is_a_clear_error() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let error = HostEnv::open(&file.join("sub"), &["meta"]).expect_err("parent is a file");
        assert!(matches!(error, HostError::DataDir { .. }), "{error}");
    }

    #[test]
    fn the_data_dir_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let data_dir = root.path().join("node");
        std::fs::create_dir(&data_dir).expect("mkdir");
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let _env = HostEnv::open(&data_dir, &["meta"]).expect("open");
        let mode = std::fs::metadata(&data_dir)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }
}
