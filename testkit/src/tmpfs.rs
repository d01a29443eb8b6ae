//! A small tmpfs for tests that need a file system that can fill up (`mount -t tmpfs`, so
//! root only). Unmounted on drop, also while a failed test unwinds.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, temp_dir};

/// A mounted tmpfs of a fixed size.
pub struct Tmpfs {
    // Dropped after `Drop::drop` has unmounted it: then the (empty) mount point is removed.
    dir: tempfile::TempDir,
    filler: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes (mode 0755) on a fresh directory under /tmp. `Err` with
    /// mount's message when that fails (e.g. not root).
    pub fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = temp_dir("sealgate-tmpfs-");
        let (ok, out) = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(dir.path()));
        if !ok {
            return Err(format!("mount -t tmpfs on {}: {out}", dir.path().display()));
        }
        let filler = dir.path().join("filler");
        Ok(Tmpfs { dir, filler })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system completely with one file (1 MiB writes, then 4 KiB ones, until
    /// ENOSPC). Returns the bytes written.
    pub fn fill(&self) -> u64 {
        let mut file = fs::File::options()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("create filler file");
        let mut written = 0u64;
        for size in [1 << 20, 4096, 512] {
            let block = vec![0x5a_u8; size];
            loop {
                match file.write(&block) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                    Err(e) => panic!("writing the filler file: {e}"),
                }
            }
        }
        written
    }

    /// Removes the filler file: the space is free again.
    pub fn free(&self) {
        match fs::remove_file(&self.filler) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the filler file: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path();
        let (ok, _) = run(Command::new("umount").arg(path));
        if !ok {
            // Still busy (a process has a file open there): detach it now, freed when closed.
            let _ = run(Command::new("umount").arg("-l").arg(path));
        }
    }
}
