//! The symbolizer helper's syscall filter: what reading ELF files from descriptors and
//! answering on a socket needs, nothing else. Any other syscall fails with EPERM (rather than
//! killing the helper, so a path of std or blazesym we did not foresee degrades to an
//! unsymbolized frame); a foreign syscall ABI (x32, i386) kills it.
use std::io;

// Classic BPF, as seccomp takes it.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Syscalls the helper makes: memory, files by descriptor (and /proc/self/fd reopens, or a
/// memfd copy of a file it may not reopen), its socket, its watchdog alarm, signals for panics
/// and aborts, exit.
#[cfg(target_arch = "x86_64")]
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_openat,
    libc::SYS_open,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_memfd_create,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_alarm,
    libc::SYS_futex,
    libc::SYS_getrandom,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_clock_gettime,
    libc::SYS_sched_yield,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program.
#[cfg(target_arch = "x86_64")]
fn program() -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, 4), // seccomp_data.arch
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
    ];
    for &nr in ALLOWED {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, RET_ALLOW));
    }
    p.push(stmt(BPF_RET_K, RET_ERRNO | libc::EPERM as u32));
    p
}

/// Install the filter (needs no_new_privs, set before). Off x86_64 there is no filter.
pub fn install() -> io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        let prog = program();
        let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut _ };
        // SAFETY: fprog points at a live program; the kernel copies it.
        let r = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const _, 0, 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("seccomp filter: {e}")));
        }
    }
    Ok(())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_syscall_jumps_to_allow_and_the_rest_to_eperm() {
        let p = program();
        // A tiny interpreter of the program's own shape.
        let run = |arch: u32, nr: u32| -> u32 {
            let (mut pc, mut acc) = (0usize, 0u32);
            loop {
                let i = p[pc];
                match i.code {
                    BPF_LD_W_ABS => acc = if i.k == 4 { arch } else { nr },
                    BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                    BPF_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                    BPF_RET_K => return i.k,
                    c => panic!("opcode {c:#x}"),
                }
                pc += 1;
            }
        };
        for &nr in ALLOWED {
            assert_eq!(run(AUDIT_ARCH_X86_64, nr as u32), RET_ALLOW, "syscall {nr}");
        }
        for nr in [libc::SYS_execve, libc::SYS_socket, libc::SYS_ptrace, libc::SYS_setuid, libc::SYS_kill] {
            assert_eq!(run(AUDIT_ARCH_X86_64, nr as u32), RET_ERRNO | libc::EPERM as u32, "syscall {nr}");
        }
        assert_eq!(run(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1), RET_KILL_PROCESS);
        assert_eq!(run(0x4000_0003, 1), RET_KILL_PROCESS, "i386");
    }
}
