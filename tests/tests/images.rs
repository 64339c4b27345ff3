//! The real OCI images `make images` builds (`images/build.sh`): each one's config
//! carries the entrypoint, the non-root user and the OCI labels; its root filesystem
//! holds exactly the binary, its shared libraries and a few /etc files; and each
//! entrypoint runs from its own unpacked root (a new mount namespace, pivot_root, the
//! image's user, nothing of the host), `mq-broker` answering real requests there.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mq_broker::client::AdminClient;
use mq_testbed::images::build::build_images;
use mq_testbed::images::layout::{Layout, RunConfig};
use mq_testbed::node::credentials::Identity;
use mq_testbed::node::sandbox::{self, Bind, Sandbox};

/// The images `make images` builds.
const IMAGES: [&str; 3] = ["mq-operator", "mq-broker", "mq-console"];
/// The non-root user every image runs as.
const USER: u32 = 65532;
/// Bound on building the images from already built binaries.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on anything a started process must do.
const DEADLINE: Duration = Duration::from_secs(30);

/// A scratch directory removed on drop (unpacked roots are tens of MB).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("mqfleet-images-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The directory of this build's binaries (`target/<profile>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf();
    for name in IMAGES {
        assert!(
            dir.join(name).exists(),
            "{name} is not built: run `cargo build --workspace --bins` first"
        );
    }
    dir
}

/// Builds `names` into `scratch/out` and returns the layouts' directory.
fn build(scratch: &Scratch, names: &[&str]) -> PathBuf {
    let out = scratch.0.join("out");
    build_images(&bin_dir(), &out, names, BUILD_TIMEOUT)
        .unwrap_or_else(|e| panic!("images build: {e}"));
    out
}

/// The layout's image tagged with the workspace version, its config and unpacked root.
fn unpack(out: &Path, name: &str, scratch: &Scratch) -> (RunConfig, PathBuf) {
    let layout = Layout::open(&out.join(name)).expect("an OCI layout");
    let manifest = layout
        .find(env!("CARGO_PKG_VERSION"))
        .expect("tagged with the version");
    let config = layout.run_config(&manifest).expect("image config");
    let rootfs = layout
        .unpack(
            env!("CARGO_PKG_VERSION"),
            &scratch.0.join(format!("unpacked-{name}")),
        )
        .expect("umoci unpack");
    (config, rootfs)
}

/// A process started in `rootfs` as `/`, killed (its whole group) on drop.
struct Contained(Child);

impl Contained {
    fn start(rootfs: &Path, argv: &[&str], binds: Vec<Bind>, config: &RunConfig) -> Contained {
        let sandbox = Sandbox {
            binds,
            hostname: None,
            workdir: PathBuf::from(config.working_dir.as_deref().unwrap_or("/")),
            root: Some(rootfs.to_path_buf()),
            identity: Some(image_identity(config)),
        };
        sandbox.prepare().expect("mount points");
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(
                config
                    .env
                    .iter()
                    .flatten()
                    .filter_map(|e| e.split_once('=')),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sandbox.apply(&mut cmd).expect("sandbox");
        Contained(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("{argv:?} starts in {}: {e}", rootfs.display())),
        )
    }

    /// Waits (bounded) for the exit; the exit status and stdout.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let mut stdout = String::new();
        let mut out = self.0.stdout.take().expect("piped");
        std::io::Read::read_to_string(&mut out, &mut stdout).expect("stdout");
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return (status, stdout);
            }
            assert!(start.elapsed() < DEADLINE, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            sandbox::signal_group(self.0.id(), libc::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// The image's `User` as `uid:gid`.
fn image_identity(config: &RunConfig) -> Identity {
    let user = config.user.as_deref().expect("the image names its user");
    let (uid, gid) = user.split_once(':').expect("uid:gid");
    Identity {
        uid: uid.parse().expect("numeric uid"),
        gid: gid.parse().expect("numeric gid"),
        groups: Vec::new(),
    }
}

/// Every path in `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
            let path = entry.path();
            out.push(
                path.strip_prefix(root)
                    .expect("inside")
                    .display()
                    .to_string(),
            );
            if entry.file_type().expect("type").is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `Uid:`/`Gid:` lines of a process (real, effective, saved, fs).
fn ids_of(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .expect("field present")
        .split_whitespace()
        .map(|v| v.parse().expect("numeric id"))
        .collect()
}

#[test]
fn each_image_has_its_config_exactly_its_files_and_runs_help_as_non_root() {
    let scratch = Scratch::new("help");
    let out = build(&scratch, &IMAGES);
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(mq_testbed::paths::workspace_dir())
        .output()
        .expect("git");
    let revision = String::from_utf8_lossy(&revision.stdout).trim().to_owned();
    for name in IMAGES {
        let (config, rootfs) = unpack(&out, name, &scratch);
        let entrypoint = format!("/usr/local/bin/{name}");
        assert_eq!(config.entrypoint, Some(vec![entrypoint.clone()]), "{name}");
        assert_eq!(config.user.as_deref(), Some("65532:65532"), "{name}");
        let labels = config.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("org.opencontainers.image.version")
                .map(String::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            labels
                .get("org.opencontainers.image.title")
                .map(String::as_str),
            Some(name)
        );
        assert_eq!(
            labels.get("org.opencontainers.image.revision"),
            Some(&revision),
            "{name}"
        );
        assert!(
            labels
                .get("org.opencontainers.image.source")
                .is_some_and(|s| !s.is_empty()),
            "{labels:?}"
        );

        // Exactly what the binary needs: itself, its libraries, the loader, /etc, /tmp.
        for path in tree(&rootfs) {
            let allowed = [
                "usr",
                "usr/local",
                "usr/local/bin",
                "etc",
                "etc/passwd",
                "etc/group",
                "etc/nsswitch.conf",
                "tmp",
                "lib64",
                "lib64/ld-linux-x86-64.so.2",
            ]
            .contains(&path.as_str())
                || path == entrypoint.trim_start_matches('/')
                || path == "lib"
                || (path.starts_with("lib/")
                    && (rootfs.join(&path).is_dir() || path.contains(".so")));
            assert!(allowed, "{name}: unexpected {path} in the image");
        }
        let binary =
            std::fs::metadata(rootfs.join(entrypoint.trim_start_matches('/'))).expect("binary");
        let host_binary = std::fs::metadata(bin_dir().join(name)).expect("host binary");
        assert!(
            binary.len() < host_binary.len() || host_binary.len() < 40 << 20,
            "{name}: debug info was not stripped"
        );
        assert_eq!(
            std::fs::metadata(rootfs.join("tmp")).expect("/tmp").mode() & 0o7777,
            0o1777
        );
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
        assert!(passwd.contains("mqfleet:x:65532:65532:"), "{passwd}");
        assert!(
            std::fs::read_to_string(rootfs.join("etc/nsswitch.conf"))
                .expect("nsswitch")
                .contains("hosts: files dns")
        );

        let (status, stdout) =
            Contained::start(&rootfs, &[&entrypoint, "--help"], Vec::new(), &config).finish();
        assert!(
            status.success(),
            "{name} --help in its own root: {status:?}"
        );
        assert!(
            stdout.contains("Usage:"),
            "{name} --help printed {stdout:?}"
        );
    }
}

#[test]
fn broker_image_serves_as_uid_65532_from_its_own_root_and_sees_nothing_of_the_host() {
    let scratch = Scratch::new("broker");
    let out = build(&scratch, &["mq-broker"]);
    let (config, rootfs) = unpack(&out, "mq-broker", &scratch);
    let data = scratch.0.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::os::unix::fs::chown(&data, Some(USER), Some(USER)).expect("chown data");
    let entrypoint = &config.entrypoint.clone().expect("entrypoint")[0];
    let args = [
        entrypoint.as_str(),
        "standalone",
        "--namesrv-listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--no-vip",
        "--http-listen",
        "127.0.0.1:0",
        "--store-dir",
        "/data/store",
    ];
    let binds = vec![Bind {
        source: data.clone(),
        target: PathBuf::from("/data"),
        read_only: false,
    }];
    let mut broker = Contained::start(&rootfs, &args, binds, &config);
    let pid = broker.0.id();

    // The ready line (JSON, with the bound addresses) comes first on stdout.
    let stdout = broker.0.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
        let mut err = String::new();
        let _ = broker
            .0
            .stderr
            .take()
            .map(|mut e| std::io::Read::read_to_string(&mut e, &mut err));
        panic!("no ready line from the broker image: {err}")
    });
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    let namesrv = ready["namesrv"]
        .as_str()
        .expect("namesrv address")
        .to_owned();
    let broker_addr = ready["broker"].as_str().expect("broker address").to_owned();

    assert_eq!(ids_of(pid, "Uid:"), [USER; 4], "the image's user");
    assert_eq!(ids_of(pid, "Gid:"), [USER; 4], "the image's group");
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    assert!(
        root.join("usr/local/bin/mq-broker").exists(),
        "its root is the image"
    );
    let workspace = mq_testbed::paths::workspace_dir();
    assert!(
        workspace.exists()
            && !root
                .join(workspace.strip_prefix("/").expect("absolute"))
                .exists(),
        "the host's files are out of sight"
    );
    assert!(!root.join("bin/sh").exists() && !root.join("proc/self").exists());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ns = AdminClient::connect(&namesrv, Duration::from_secs(5))
            .await
            .expect("name server answers");
        let start = Instant::now();
        loop {
            let info = ns.cluster_info().await.expect("cluster info");
            if info
                .broker_addr_table
                .values()
                .any(|b| b.broker_addrs.values().any(|a| *a == broker_addr))
            {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the broker never registered: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let b = AdminClient::connect(&broker_addr, Duration::from_secs(5))
            .await
            .expect("broker answers");
        let info = b.runtime_info().await.expect("runtime info");
        assert!(!info.is_empty());
    });
    // What the broker stored went through the bind, as its user.
    let store = data.join("store");
    assert_eq!(
        std::fs::metadata(&store)
            .expect("store dir written through /data")
            .uid(),
        USER
    );

    sandbox::signal_group(pid, libc::SIGTERM);
    let start = Instant::now();
    while broker.0.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < DEADLINE,
            "the broker did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn image_load_records_normalised_tag_and_digest_references_once() {
    use mq_testbed::images::store::Store;
    let scratch = Scratch::new("store");
    let out = build(&scratch, &["mq-broker"]);
    let testbed = scratch.0.join("testbed");
    let version = env!("CARGO_PKG_VERSION");
    let layout = format!("{}:{version}", out.join("mq-broker").display());

    let loaded = mq_testbed::images::load(&testbed, &layout, None).expect("load");
    let tagged = format!("docker.io/mqfleet/mq-broker:{version}");
    assert!(
        loaded.iter().any(|l| l.reference == tagged && l.changed),
        "{loaded:?}"
    );
    let digest = loaded[0].digest.clone();
    let again = mq_testbed::images::load(&testbed, &layout, None).expect("second load");
    assert!(
        again.iter().all(|l| !l.changed),
        "a second load changes nothing: {again:?}"
    );

    let store = Store::new(&testbed);
    let found = |image: &str| store.resolve(image).expect("resolvable").map(|i| i.digest);
    for same in [
        format!("mqfleet/mq-broker:{version}"),
        format!("docker.io/mqfleet/mq-broker:{version}"),
        format!("mqfleet/mq-broker@{digest}"),
        format!("mqfleet/mq-broker:other@{digest}"),
    ] {
        assert_eq!(found(&same), Some(digest.clone()), "{same}");
    }
    let zeros = format!("sha256:{}", "0".repeat(64));
    for other in [
        format!("registry.local:5000/mqfleet/mq-broker:{version}"),
        "mqfleet/mq-broker:latest".to_owned(),
        "mqfleet/mq-broker".to_owned(),
        format!("mqfleet/mq-broker@{zeros}"),
        format!("other/mq-broker@{digest}"),
    ] {
        assert_eq!(found(&other), None, "{other}");
    }
    assert!(store.resolve("Bad/Ref").is_err());
    let rootfs = store
        .resolve(&format!("mqfleet/mq-broker:{version}"))
        .expect("ok")
        .expect("found")
        .rootfs;
    assert!(rootfs.join("usr/local/bin/mq-broker").is_file());

    // Another name for the same image is its own reference.
    let registry = "registry.local:5000/mqfleet/mq-broker";
    mq_testbed::images::load(&testbed, &layout, Some(registry))
        .expect("load under a registry name");
    assert_eq!(
        found(&format!("{registry}:{version}")),
        Some(digest.clone())
    );

    let missing = mq_testbed::images::load(
        &testbed,
        &format!("{}:nope", out.join("mq-broker").display()),
        None,
    )
    .expect_err("no such tag");
    assert!(
        missing.to_string().contains(&format!("tags: {version}")),
        "{missing}"
    );
    let not_layout = mq_testbed::images::load(&testbed, &scratch.0.display().to_string(), None)
        .expect_err("not a layout");
    assert!(
        not_layout.to_string().contains("not an OCI image layout"),
        "{not_layout}"
    );
}
