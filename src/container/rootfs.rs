//! A container's rootfs: an overlay of the image's layer snapshots (shared, read-only)
//! with a writable upper dir of its own.
//!
//! The overlay is `volatile` (Linux 5.10+): it never syncs its upper dir's file system. A
//! container's writable layer does not outlive a host crash in any case (after a reboot
//! every container has exited, and CRI never restarts one: kubelet creates a new container
//! with a new layer), so those syncs bought nothing; without the option, unmounting an
//! overlay (when a container's last process exits, on StopContainer's path) syncs the whole
//! upper file system, every other container's and the host's dirty data included: 0.4 ms
//! median here with nothing else writing, without bound on a busy node. Volumes are bind
//! mounts, not overlays: their syncs are the application's, as before. A kernel without
//! the option gets the overlay without it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The kernel reads mount options from one page.
const MAX_OPTIONS: usize = 4000;

/// Set once the kernel refused `volatile` (before Linux 5.10): later mounts go without it.
static NO_VOLATILE: AtomicBool = AtomicBool::new(false);

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
    let mount_with = |options: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
    };
    let mounted = match NO_VOLATILE.load(Ordering::Relaxed) {
        true => mount_with(&options),
        false => match mount_with(&format!("{options},volatile")) {
            // An unknown option; any other fault in the options shows again below.
            Err(nix::errno::Errno::EINVAL) => mount_with(&options).inspect(|_| {
                NO_VOLATILE.store(true, Ordering::Relaxed);
                tracing::info!("overlay: this kernel has no `volatile`; rootfs mounts sync");
            }),
            other => other,
        },
    };
    mounted.map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rootfs_is_a_volatile_overlay_of_its_layers() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to mount");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = |n: &str| {
            let p = dir.path().join(n);
            std::fs::create_dir(&p).unwrap();
            p
        };
        let (low, upper, work, target) = (d("low"), d("upper"), d("work"), d("rootfs"));
        std::fs::write(low.join("image-file"), b"from the image").unwrap();
        mount_overlay(&[low], &upper, &work, &target).unwrap();
        let line = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == target.to_str())
            .map(str::to_owned);
        std::fs::write(target.join("written"), b"x").unwrap();
        let read = std::fs::read(target.join("image-file"));
        unmount(&target).unwrap();
        let line = line.expect("the overlay in the mount table");
        assert!(line.contains(" overlay overlay "), "{line}");
        // Shown as `volatile`, or as `fsync=volatile` by newer kernels.
        assert!(line.contains("volatile"), "{line}");
        assert_eq!(read.unwrap(), b"from the image");
        assert!(
            upper.join("written").exists(),
            "writes land in the upper dir"
        );
    }
}
