//! The systemd unit of a process, from `/proc/PID/cgroup`.
//!
//! On the unified hierarchy the file holds `0::/system.slice/nginx.service`; on hybrid or
//! legacy systems the `name=systemd` line carries the same path. The unit is the deepest
//! path component that names a service or scope, so a process in a unit's delegated
//! sub-cgroup (`/system.slice/foo.service/payload`) still counts as `foo.service`.

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

fn unit_from_path(path: &str) -> Option<String> {
    path.split('/')
        .rfind(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_owned)
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
            Some("app-foo.scope")
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

    #[test]
    fn no_unit() {
        assert_eq!(unit_from_cgroup("0::/\n"), None);
        assert_eq!(unit_from_cgroup("0::/docker/abc\n"), None);
        assert_eq!(unit_from_cgroup(""), None);
        assert_eq!(unit_from_cgroup("garbage"), None);
    }
}
