//! A container's rootfs: an overlay of the image's layer snapshots (shared, read-only)
//! with a writable upper dir of its own.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The kernel reads mount options from one page.
const MAX_OPTIONS: usize = 4000;

/// Mounts `lower` (topmost first) + `upper`/`work` on `target`.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    if lower.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "image has no layers",
        ));
    }
    // The merged root takes the upper dir's mode: 0755 as runc's rootfs, not the 0700 the
    // daemon's umask gave it, or a non-root container could not even list "/".
    set_mode(upper, 0o755)?;
    let lowers: Vec<String> = lower.iter().map(|p| escape(p)).collect::<io::Result<_>>()?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        escape(upper)?,
        escape(work)?
    );
    if options.len() > MAX_OPTIONS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "image has too many layers ({}) for one overlay mount",
                lower.len()
            ),
        ));
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mount overlay on {}: {e}", target.display()),
        )
    })
}

/// Unmounts `target`; not mounted or missing is fine (idempotent removal).
pub fn unmount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("unmount {}: {e}", target.display()),
        )),
    }
}

/// Overlay option values cannot hold `,` or `:` (they separate options and layers).
fn escape(p: &Path) -> io::Result<String> {
    let s = p
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 path"))?;
    if s.contains(',') || s.contains(':') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {s:?} contains ',' or ':' which overlayfs cannot take"),
        ));
    }
    Ok(s.to_owned())
}

/// Gives `path` exactly `mode`, whatever the umask made it.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Creates one directory in a container's rootfs with mode 0755 (as runc creates a
/// missing working directory), not the daemon's umask's 0700.
pub fn create_dir_0755(dir: &Path) -> io::Result<()> {
    std::fs::create_dir(dir)?;
    set_mode(dir, 0o755)
}
