//! The systemd unit of a process, from `/proc/PID/cgroup`.
//!
//! On the unified hierarchy the file holds `0::/system.slice/nginx.service`; on hybrid or
//! legacy systems the `name=systemd` line carries the same path. The unit is the deepest
//! path component that names a service or scope, so a process in a unit's delegated
//! sub-cgroup (`/system.slice/foo.service/payload`) still counts as `foo.service`. The
//! same path names the container a process runs in, as Falco does.

use crate::model::listener::Container;

/// The unit named by a `/proc/PID/cgroup` file's content, if any.
pub fn unit_from_cgroup(content: &str) -> Option<String> {
    let mut fallback = None;
    for line in content.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let unified = id == "0" && controllers.is_empty();
        if (unified || controllers == "name=systemd")
            && let Some(unit) = unit_from_path(path)
        {
            if unified {
                return Some(unit);
            }
            fallback = Some(unit);
        }
    }
    fallback
}

/// The container a process runs in, from any line of its `/proc/PID/cgroup` (v2's `0::`
/// line or a v1 controller's): Docker (`docker-<id>.scope` under systemd, `/docker/<id>`
/// under cgroupfs), Podman (`libpod-<id>.scope`, `/libpod_parent/libpod-<id>`),
/// containerd and CRI-O (`cri-containerd-<id>.scope`, `crio-<id>.scope`), and Kubernetes
/// pods (`kubepods...pod<uid>`, with `_` for `-` under the systemd driver). The id is
/// checked to be hex; the name is not here (see [`docker_name`]).
pub fn container_from_cgroup(content: &str) -> Option<Container> {
    content.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        container_from_path(path)
    })
}

fn container_from_path(path: &str) -> Option<Container> {
    let mut found: Option<Container> = None;
    let mut pod = None;
    let mut delegated = None;
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in components.iter().enumerate() {
        if let Some(uid) = pod_uid(c) {
            pod = Some(uid);
        }
        if let Some(uid) = delegated_uid(c) {
            delegated = Some(uid);
        }
        let c = c.strip_suffix(".scope").unwrap_or(c);
        let by_prefix = [
            ("docker-", "docker"),
            ("libpod-", "podman"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
        ]
        .into_iter()
        .find_map(|(prefix, runtime)| Some((runtime, c.strip_prefix(prefix)?)));
        // cgroupfs driver: /docker/<id>, /kubepods/.../<id>.
        let by_parent = match i.checked_sub(1).map(|p| components[p]) {
            Some("docker") => Some(("docker", c)),
            Some(parent) if pod_uid(parent).is_some() => Some(("kubernetes", c)),
            _ => None,
        };
        if let Some((runtime, id)) = by_prefix.or(by_parent)
            && is_container_id(id)
        {
            found = Some(Container {
                runtime: runtime.to_owned(),
                id: id.to_owned(),
                name: None,
                pod: None,
                rootless_uid: None,
            });
            // The outermost container is the one the host's runtime made: what lies
            // below it, a process inside may have made (a cgroup named after another
            // container, to borrow its name and its rules).
            break;
        }
    }
    let mut c = found?;
    c.pod = pod;
    c.rootless_uid = delegated;
    Some(c)
}

/// `user@1000.service` → 1000: the subtree systemd hands to that user to manage.
fn delegated_uid(component: &str) -> Option<u32> {
    component
        .strip_prefix("user@")?
        .strip_suffix(".service")?
        .parse()
        .ok()
}

/// A container id: 12 to 64 hex digits.
fn is_container_id(s: &str) -> bool {
    (12..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `kubepods-besteffort-pod0f1e2d3c_....slice` or `pod0f1e2d3c-...` → the pod's uid, with
/// dashes.
fn pod_uid(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    let start = c.rfind("pod")? + 3;
    let uid = c[start..].replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

/// A Docker container's name, from the runtime's state on disk
/// (`/var/lib/docker/containers/<id>/config.v2.json`, `"Name":"/web-1"`), without an API
/// call. `None` when the file is not there or not readable.
pub fn docker_name(root: &std::path::Path, id: &str) -> Option<String> {
    let path = root
        .join("var/lib/docker/containers")
        .join(id)
        .join("config.v2.json");
    let bytes = crate::files::read_regular(&path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let name = v.get("Name")?.as_str()?.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_owned())
}

/// The innermost unit; a unit of a user's own service manager is named with it
/// (`user@1000.service/nginx.service`): any user can start a unit of any name there,
/// so it must not pass for the system's unit of that name.
fn unit_from_path(path: &str) -> Option<String> {
    let components: Vec<&str> = path.split('/').collect();
    let at = components
        .iter()
        .rposition(|c| c.ends_with(".service") || c.ends_with(".scope"))?;
    let unit = components[at];
    match components[..at].iter().find(|c| delegated_uid(c).is_some()) {
        Some(manager) => Some(format!("{manager}/{unit}")),
        None => Some(unit.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_hierarchy() {
        assert_eq!(
            unit_from_cgroup("0::/system.slice/nginx.service\n").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            unit_from_cgroup(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope\n"
            )
            .as_deref(),
            Some("user@1000.service/app-foo.scope")
        );
        // A user's own unit is not the system's unit of the same name.
        assert_eq!(
            unit_from_cgroup(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service\n"
            )
            .as_deref(),
            Some("user@1000.service/nginx.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/user.slice/user-1000.slice/user@1000.service\n").as_deref(),
            Some("user@1000.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/system.slice/foo.service/payload\n").as_deref(),
            Some("foo.service")
        );
    }

    #[test]
    fn hybrid_hierarchy_uses_name_systemd() {
        let text =
            "12:memory:/system.slice/ssh.service\n1:name=systemd:/system.slice/ssh.service\n";
        assert_eq!(unit_from_cgroup(text).as_deref(), Some("ssh.service"));
    }

    fn container(cgroup: &str) -> (String, String, Option<String>) {
        let c = container_from_cgroup(cgroup).unwrap_or_else(|| panic!("{cgroup}"));
        (c.runtime.clone(), c.short_id().to_owned(), c.pod.clone())
    }

    const ID: &str = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e";
    const POD: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

    #[test]
    fn containers_of_every_runtime_v2_and_v1() {
        let short = &ID[..12];
        for (cgroup, runtime) in [
            (format!("0::/system.slice/docker-{ID}.scope\n"), "docker"),
            (
                format!("12:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"),
                "docker",
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                "podman",
            ),
            (
                format!("0::/system.slice/cri-containerd-{ID}.scope\n"),
                "containerd",
            ),
            (format!("0::/system.slice/crio-{ID}.scope\n"), "cri-o"),
            // The same forms on cgroup v1 (a named systemd hierarchy beside the
            // controllers), and the cgroupfs drivers' paths on v2.
            (
                format!(
                    "12:memory:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope\n"
                ),
                "docker",
            ),
            (format!("0::/docker/{ID}\n"), "docker"),
            (format!("5:pids:/libpod_parent/libpod-{ID}\n"), "podman"),
            (
                format!("1:name=systemd:/system.slice/cri-containerd-{ID}.scope\n"),
                "containerd",
            ),
            (
                format!("1:name=systemd:/system.slice/crio-{ID}.scope\n"),
                "cri-o",
            ),
        ] {
            assert_eq!(
                container(&cgroup),
                (runtime.to_owned(), short.to_owned(), None),
                "{cgroup}"
            );
        }
    }

    #[test]
    fn kubernetes_pods_on_both_drivers_and_both_hierarchies() {
        let short = &ID[..12];
        let systemd_driver = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n",
            POD.replace('-', "_")
        );
        assert_eq!(
            container(&systemd_driver),
            ("containerd".into(), short.into(), Some(POD.into()))
        );
        let v1_systemd_driver = format!(
            "1:name=systemd:/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope\n",
            POD.replace('-', "_")
        );
        assert_eq!(
            container(&v1_systemd_driver),
            ("cri-o".into(), short.into(), Some(POD.into()))
        );
        for cgroupfs_driver in [
            format!("11:cpu:/kubepods/burstable/pod{POD}/{ID}\n"),
            format!("0::/kubepods/besteffort/pod{POD}/{ID}\n"),
        ] {
            assert_eq!(
                container(&cgroupfs_driver),
                ("kubernetes".into(), short.into(), Some(POD.into()))
            );
        }
    }

    #[test]
    fn rootless_nested_and_no_containers() {
        let short = &ID[..12];
        // A cgroup made inside a container, named after another one, borrows nothing:
        // the outermost container is the one the host's runtime made.
        let other = "aaaaaaaaaaaabbbbbbbbbbbbccccccccccccddddddddddddeeeeeeeeeeeeffff";
        let nested = format!("0::/system.slice/libpod-{ID}.scope/docker-{other}.scope\n");
        assert_eq!(container(&nested), ("podman".into(), short.into(), None));
        // A component with bytes that are not UTF-8 (read lossily) hides nothing else.
        let odd = format!("0::/system.slice/docker-{ID}.scope/\u{fffd}\u{fffd}x\n");
        assert_eq!(container(&odd), ("docker".into(), short.into(), None));
        let rootless = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
        );
        let c = container_from_cgroup(&rootless).unwrap();
        assert_eq!((c.runtime.as_str(), c.rootless_uid), ("podman", Some(1000)));
        assert_eq!(
            container_from_cgroup(&format!("0::/system.slice/docker-{ID}.scope"))
                .unwrap()
                .rootless_uid,
            None
        );
        for none in [
            "0::/system.slice/nginx.service\n",
            "0::/docker/not-an-id\n",
            "0::/\n",
            "",
        ] {
            assert_eq!(container_from_cgroup(none), None, "{none}");
        }
    }

    #[test]
    fn no_unit() {
        assert_eq!(unit_from_cgroup("0::/\n"), None);
        assert_eq!(unit_from_cgroup("0::/docker/abc\n"), None);
        assert_eq!(unit_from_cgroup(""), None);
        assert_eq!(unit_from_cgroup("garbage"), None);
    }
}
