//! The few system calls the `nix` crate has no safe wrapper for, so that
//! the crate's `unsafe` outside the shared-memory module
//! ([`crate::memif::shm`]) sits in one small place: adopting a descriptor
//! the kernel just gave us, and the TUN device ioctl.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

/// Takes ownership of a raw fd the kernel has just created for this process
/// (from `accept4` or an `SCM_RIGHTS` control message).
pub fn adopt_fd(raw: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass only descriptors freshly returned by the kernel
    // to this process (accept4's result, SCM_RIGHTS payloads received with
    // MSG_CMSG_CLOEXEC) that no other owner holds, so wrapping each in
    // exactly one OwnedFd gives it exactly one owner that closes it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: u64 = 0x4004_54ca;

/// `struct ifreq` as `TUNSETIFF` reads and writes it: the name, then the
/// flags (`ifr_flags`), padded to the union's 24 bytes (40 in all on
/// 64-bit Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Attaches an open `/dev/net/tun` fd to the TUN/TAP device `name` with
/// `flags` (`IFF_TUN`, `IFF_NO_PI`, ...), creating the device if needed.
/// Returns the device's name as the kernel set it (see
/// [`crate::link::tun`]).
pub fn tun_set_iff(fd: std::os::fd::BorrowedFd<'_>, name: &str, flags: i16) -> nix::Result<String> {
    let mut req = IfReqFlags {
        name: [0; 16],
        flags,
        _pad: [0; 22],
    };
    // At most 15 bytes: the 16th stays NUL.
    if name.len() > 15 || name.as_bytes().contains(&0) {
        return Err(nix::Error::EINVAL);
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `req` is a live, properly aligned `#[repr(C)]` value of the
    // size the kernel's `struct ifreq` has (40 bytes: 16 name + 24 union,
    // checked by the assertion below); TUNSETIFF reads the name and flags
    // from it and writes the final name back into it, never beyond. `fd`
    // is a borrowed, open descriptor for the duration of the call.
    const _: () = assert!(std::mem::size_of::<IfReqFlags>() == 40);
    let r =
        unsafe { nix::libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReqFlags) };
    nix::Error::result(r)?;
    let end = req.name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&req.name[..end]).into_owned())
}
