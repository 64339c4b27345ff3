//! How a stored image runs as a Kubernetes container: its config's Entrypoint, Cmd, Env,
//! WorkingDir and User merged with the container's command, args, env and
//! securityContext, the way kubelet and containerd merge them.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::layout::RunConfig;
use crate::node::credentials::Identity;
use crate::node::expand::expand;

/// The argv: `command` replaces the Entrypoint and drops Cmd; `args` replace Cmd. Only
/// the container's words are `$(VAR)`-expanded (as kubelet does); empty lists count as
/// unset. `Err` when nothing is left to run.
pub fn argv(
    image: &RunConfig,
    container: &Container,
    env: &HashMap<String, String>,
) -> Result<Vec<String>, String> {
    let set = |list: &Option<Vec<String>>| list.clone().filter(|l| !l.is_empty());
    let expanded =
        |words: Vec<String>| -> Vec<String> { words.iter().map(|w| expand(w, env)).collect() };
    let command = set(&container.command).map(expanded);
    let args = set(&container.args).map(expanded);
    let mut argv = match command {
        Some(command) => command,
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    match args {
        Some(args) => argv.extend(args),
        None if set(&container.command).is_none() => {
            argv.extend(image.cmd.clone().unwrap_or_default())
        }
        None => {}
    }
    if argv.is_empty() {
        return Err("the image has no Entrypoint or Cmd and the container sets no command".into());
    }
    Ok(argv)
}

/// The image's `Env`, then kubelet's variables on top (the container's win), except
/// that kubelet's defaults for `PATH` and `HOME` never replace the image's own unless
/// the container sets them itself.
pub fn environment(
    image: &RunConfig,
    container: &Container,
    kubelet: Vec<(String, String)>,
    home: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = image
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let explicit = |key: &str| container.env.iter().flatten().any(|v| v.name == key);
    let image_has = |out: &[(String, String)], key: &str| out.iter().any(|(k, _)| k == key);
    for (key, value) in kubelet {
        let value = match key.as_str() {
            "PATH" | "HOME" if !explicit(&key) && image_has(&out, &key) => continue,
            "HOME" if !explicit(&key) => home.to_owned(),
            _ => value,
        };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key, value)),
        }
    }
    out
}

/// The working directory: the container's, else the image's, else `/`.
pub fn workdir(image: &RunConfig, container: &Container) -> String {
    container
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned())
}

/// Who the container runs as: `runAsUser`/`runAsGroup` of the container, else the Pod,
/// else the image's `User` (names looked up in the image's /etc/passwd and /etc/group);
/// supplementary groups are the Pod's `fsGroup` and `supplementalGroups`. Also returns
/// the user's home from the image's passwd (`/` when it has none).
pub fn identity(
    image: &RunConfig,
    pod: &Pod,
    container: &Container,
    rootfs: &Path,
) -> Result<(Identity, String), String> {
    let pod_ctx = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let ctx = container.security_context.as_ref();
    let id = |v: Option<i64>, what: &str| -> Result<Option<u32>, String> {
        v.map(|v| u32::try_from(v).map_err(|_| format!("{what} {v} is not a valid id")))
            .transpose()
    };
    let run_as_user = id(
        ctx.and_then(|c| c.run_as_user)
            .or(pod_ctx.and_then(|c| c.run_as_user)),
        "runAsUser",
    )?;
    let run_as_group = id(
        ctx.and_then(|c| c.run_as_group)
            .or(pod_ctx.and_then(|c| c.run_as_group)),
        "runAsGroup",
    )?;
    let passwd = read_db(rootfs, "etc/passwd");
    let (image_uid, image_gid) = image_user(
        image.user.as_deref().unwrap_or(""),
        &passwd,
        &read_db(rootfs, "etc/group"),
    )?;
    let uid = run_as_user.unwrap_or(image_uid);
    let non_root = ctx
        .and_then(|c| c.run_as_non_root)
        .or(pod_ctx.and_then(|c| c.run_as_non_root))
        .unwrap_or(false);
    if non_root && uid == 0 {
        // kubelet's own words for this refusal.
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    let primary = |uid: u32| {
        passwd
            .iter()
            .find(|e| e.get(2).and_then(|v| v.parse().ok()) == Some(uid))
            .and_then(|e| e.get(3)?.parse().ok())
    };
    let gid = run_as_group
        .or(if run_as_user.is_none() {
            image_gid
        } else {
            None
        })
        .or_else(|| primary(uid))
        .unwrap_or(0);
    let mut groups = Vec::new();
    let fs_group = id(pod_ctx.and_then(|c| c.fs_group), "fsGroup")?;
    for g in fs_group.into_iter().chain(
        pod_ctx
            .and_then(|c| c.supplemental_groups.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| u32::try_from(g).ok()),
    ) {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let home = passwd
        .iter()
        .find(|e| e.get(2).and_then(|v| v.parse().ok()) == Some(uid))
        .and_then(|e| e.get(5).cloned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok((Identity { uid, gid, groups }, home))
}

/// The image's `User`: `uid`, `name`, `uid:gid`, `name:group`; `None` gid when unsaid.
fn image_user(
    user: &str,
    passwd: &[Vec<String>],
    group: &[Vec<String>],
) -> Result<(u32, Option<u32>), String> {
    if user.is_empty() {
        return Ok((0, Some(0)));
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |db: &[Vec<String>], name: &str, field: usize| -> Option<u32> {
        db.iter()
            .find(|e| e.first().map(String::as_str) == Some(name))
            .and_then(|e| e.get(field)?.parse().ok())
    };
    let uid = match user_part.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => lookup(passwd, user_part, 2)
            .ok_or_else(|| format!("the image's user {user_part:?} is not in its /etc/passwd"))?,
    };
    let gid = match group_part {
        None => match user_part.parse::<u32>() {
            Ok(_) => None,
            Err(_) => lookup(passwd, user_part, 3),
        },
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(group, g, 2)
                .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
        }),
    };
    Ok((uid, gid))
}

/// The `:`-separated lines of a passwd-style file in the image (empty when absent).
fn read_db(rootfs: &Path, file: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(rootfs.join(file))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> RunConfig {
        RunConfig {
            user: Some("65532:65532".into()),
            env: Some(vec![
                "PATH=/usr/local/bin".into(),
                "MODE=image".into(),
                "NOEQUALS".into(),
            ]),
            entrypoint: Some(vec!["/usr/local/bin/mq-broker".into()]),
            cmd: Some(vec!["namesrv".into()]),
            working_dir: Some("/data".into()),
            labels: None,
        }
    }

    fn container(spec: serde_json::Value) -> Container {
        let mut base = json!({"name": "c", "image": "mqfleet/mq-broker:0.1.0"});
        base.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn pod(security: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "securityContext": security}})).unwrap()
    }

    #[test]
    fn command_replaces_the_entrypoint_and_drops_cmd_args_replace_cmd() {
        let env: HashMap<String, String> = [("IP".to_owned(), "1.2.3.4".to_owned())].into();
        let run = |spec| argv(&image(), &container(spec), &env).unwrap();
        assert_eq!(run(json!({})), ["/usr/local/bin/mq-broker", "namesrv"]);
        assert_eq!(
            run(json!({"args": ["standalone", "--listen=$(IP):1"]})),
            [
                "/usr/local/bin/mq-broker",
                "standalone",
                "--listen=1.2.3.4:1"
            ]
        );
        assert_eq!(run(json!({"command": ["/bin/other"]})), ["/bin/other"]);
        assert_eq!(
            run(json!({"command": ["/bin/other"], "args": ["x"]})),
            ["/bin/other", "x"]
        );
        assert_eq!(
            run(json!({"command": [], "args": []})),
            ["/usr/local/bin/mq-broker", "namesrv"]
        );
        let empty = RunConfig::default();
        assert!(
            argv(&empty, &container(json!({})), &env)
                .unwrap_err()
                .contains("no Entrypoint")
        );
        assert_eq!(
            argv(&empty, &container(json!({"args": ["/bin/x"]})), &env).unwrap(),
            ["/bin/x"]
        );
    }

    #[test]
    fn container_env_wins_but_kubelet_defaults_keep_the_images_path() {
        let kubelet = vec![
            ("PATH".to_owned(), "/usr/bin".to_owned()),
            ("HOME".to_owned(), "/host/pods/x/home".to_owned()),
            ("MODE".to_owned(), "container".to_owned()),
            ("POD_IP".to_owned(), "127.0.0.9".to_owned()),
        ];
        let env = environment(
            &image(),
            &container(json!({"env": [{"name": "MODE", "value": "container"}]})),
            kubelet.clone(),
            "/tmp",
        );
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PATH"), Some("/usr/local/bin"));
        assert_eq!(
            get("HOME"),
            Some("/tmp"),
            "the host's pod home means nothing inside the image"
        );
        assert_eq!(get("MODE"), Some("container"));
        assert_eq!(get("POD_IP"), Some("127.0.0.9"));
        assert_eq!(get("NOEQUALS"), None);
        let env = environment(
            &image(),
            &container(json!({"env": [{"name": "PATH", "value": "/usr/bin"}]})),
            kubelet,
            "/tmp",
        );
        assert!(env.contains(&("PATH".to_owned(), "/usr/bin".to_owned())));
    }

    #[test]
    fn working_dir_container_then_image_then_root() {
        assert_eq!(workdir(&image(), &container(json!({}))), "/data");
        assert_eq!(
            workdir(&image(), &container(json!({"workingDir": "/w"}))),
            "/w"
        );
        assert_eq!(workdir(&RunConfig::default(), &container(json!({}))), "/");
    }

    #[test]
    fn identity_from_security_context_else_the_image() {
        let dir = std::env::temp_dir().join(format!("mq-runconfig-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\nmqfleet:x:65532:65532::/tmp:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\nmqfleet:x:65532:\nstaff:x:50:\n",
        )
        .unwrap();
        let c = container(json!({}));
        let (id, home) = identity(&image(), &pod(json!({})), &c, &dir).unwrap();
        assert_eq!((id.uid, id.gid, id.groups.clone()), (65532, 65532, vec![]));
        assert_eq!(home, "/tmp");
        let (id, home) = identity(
            &image(),
            &pod(json!({"runAsUser": 65533, "fsGroup": 65534, "supplementalGroups": [65534, 7]})),
            &c,
            &dir,
        )
        .unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (65533, 0, vec![65534, 7]));
        assert_eq!(home, "/");
        let c2 = container(json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 1001}}));
        let (id, _) = identity(&image(), &pod(json!({"runAsUser": 65533})), &c2, &dir).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1001));
        let named = RunConfig {
            user: Some("mqfleet:staff".into()),
            ..RunConfig::default()
        };
        let (id, _) = identity(&named, &pod(json!({})), &c, &dir).unwrap();
        assert_eq!((id.uid, id.gid), (65532, 50));
        let root = RunConfig::default();
        assert_eq!(identity(&root, &pod(json!({})), &c, &dir).unwrap().0.uid, 0);
        let as_root = pod(json!({"runAsNonRoot": true, "runAsUser": 0}));
        assert!(
            identity(&image(), &as_root, &c, &dir)
                .unwrap_err()
                .contains("runAsNonRoot")
        );
        let non_root = pod(json!({"runAsNonRoot": true}));
        assert_eq!(
            identity(&image(), &non_root, &c, &dir).unwrap().0.uid,
            65532
        );
        assert!(
            identity(&root, &non_root, &c, &dir).is_err(),
            "the image's root user is refused too"
        );
        let unknown = RunConfig {
            user: Some("nobody-here".into()),
            ..RunConfig::default()
        };
        assert!(
            identity(&unknown, &pod(json!({})), &c, &dir)
                .unwrap_err()
                .contains("not in its /etc/passwd")
        );
        let negative = pod(json!({"runAsUser": -1}));
        assert!(identity(&image(), &negative, &c, &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
