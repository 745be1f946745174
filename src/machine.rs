//! This machine as an image sees it, and what an image made on another one needs of it:
//! instruction-set features, the XSAVE layout of the extended registers, the kernel's vDSO
//! layout. `crterm check` prints it; resume refuses by the same rules.
//!
//! Policies (README, "Resuming on another machine"):
//! * CPU features: a program may have picked code paths by any feature of the machine it
//!   started on (glibc does, at start-up), so every feature of the image's machine must be
//!   here, unless the session ran with `--cpu baseline` (glibc told to use x86-64-v2 code
//!   only): then the x86-64-v2 features are enough.
//! * XSAVE: the registers are carried in the standard (non-compacted) XSAVE format, whose
//!   component offsets differ between CPUs (AMD packs AVX-512 where Intel leaves room for
//!   MPX); the image records its machine's offsets, and the state is moved component by
//!   component into this CPU's layout. Components this CPU lacks are dropped (a baseline
//!   session does not use them).
//! * vDSO: glibc keeps pointers into it; it is placed at its old address, which needs the
//!   same layout of `[vvar]`, `[vvar_vclock]` and `[vdso]`.

use serde::{Deserialize, Serialize};

/// The x86-64-v2 micro-architecture level, as /proc/cpuinfo names its features (`pni` is
/// SSE3, `cx16` CMPXCHG16B, `lahf_lm` LAHF/SAHF in long mode).
pub const X86_64_V2: &[&str] = &[
    "fxsr", "sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm",
];

const X86_64_V3: &[&str] = &[
    "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave",
];

const X86_64_V4: &[&str] = &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];

/// glibc's tunables for `crterm start --cpu baseline`: with XSAVE and XSAVEC off, glibc
/// also turns off every feature that needs them (AVX and up) and its lazy-binding
/// trampoline saves registers with FXSAVE, whose size is the same on every CPU; the
/// scalar x86-64-v3 features go too. Its string functions and its choice of
/// `glibc-hwcaps` library directories then stay at x86-64-v2.
pub const BASELINE_TUNABLES: &str = "glibc.cpu.hwcaps=-XSAVEC,-XSAVE,-AVX_Fast_Unaligned_Load,-RTM,-AVX,-AVX2,-AVX512F,-AVX512BW,-AVX512CD,-AVX512DQ,-AVX512VL,-FMA,-F16C,-BMI1,-BMI2,-LZCNT,-MOVBE";

/// `GLIBC_TUNABLES` for a baseline session: the baseline added to what the user has.
pub fn baseline_environment(current: Option<&str>) -> String {
    match current {
        Some(c) if !c.is_empty() => format!("{c}:{BASELINE_TUNABLES}"),
        _ => BASELINE_TUNABLES.to_string(),
    }
}

/// The highest x86-64 micro-architecture level the features make.
pub fn x86_64_level(features: &[String]) -> u8 {
    let has = |set: &[&str]| set.iter().all(|f| features.iter().any(|g| g == f));
    match (has(X86_64_V2), has(X86_64_V3), has(X86_64_V4)) {
        (true, true, true) => 4,
        (true, true, false) => 3,
        (true, false, _) => 2,
        _ => 1,
    }
}

/// Names of the XSAVE components, by number.
pub fn component_name(i: u8) -> String {
    match i {
        0 => "x87".into(),
        1 => "sse".into(),
        2 => "avx".into(),
        3 => "mpx-bndregs".into(),
        4 => "mpx-bndcsr".into(),
        5 => "avx512-opmask".into(),
        6 => "avx512-zmm-hi256".into(),
        7 => "avx512-hi16-zmm".into(),
        9 => "pkru".into(),
        17 => "amx-tilecfg".into(),
        18 => "amx-tiledata".into(),
        19 => "apx".into(),
        n => format!("component {n}"),
    }
}

/// Where the XSAVE standard format puts each user component on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XsaveLayout {
    /// The user state components the kernel enabled (XCR0).
    pub xcr0: u64,
    /// The size of the whole area for those components.
    pub size: u32,
    /// (component, offset, size) for components 2 and up.
    pub components: Vec<(u8, u32, u32)>,
}

/// Offset of XSTATE_BV (which components the area holds) in the header after the
/// 512-byte legacy region.
const XSTATE_BV: usize = 512;
const LEGACY_AND_HEADER: usize = 576;
/// Where ptrace's XSAVE area says which components XCR0 enables.
const SW_XCR0: usize = 464;

impl XsaveLayout {
    /// This CPU's layout, from CPUID leaf 0xD and XCR0.
    pub fn here() -> XsaveLayout {
        let xcr0 = crate::sys::xcr0();
        let size = std::arch::x86_64::__cpuid_count(0xd, 0).ebx;
        let components = (2u8..63)
            .filter(|&i| xcr0 & (1 << i) != 0)
            .map(|i| {
                let r = std::arch::x86_64::__cpuid_count(0xd, i as u32);
                (i, r.ebx, r.eax)
            })
            .collect();
        XsaveLayout {
            xcr0,
            size,
            components,
        }
    }

    pub fn names(&self) -> Vec<String> {
        (0u8..63)
            .filter(|&i| self.xcr0 & (1 << i) != 0)
            .map(component_name)
            .collect()
    }

    /// Move an XSAVE area (standard format, from ptrace) in layout `self` into layout
    /// `to`: the legacy region and the header as they are, each component both layouts
    /// have from its offset here to its offset there; components `to` lacks are dropped
    /// from the header (their registers start from their initial state).
    pub fn convert(&self, to: &XsaveLayout, area: &[u8]) -> Vec<u8> {
        if self == to {
            return area.to_vec();
        }
        let mut out = vec![0u8; (to.size as usize).max(LEGACY_AND_HEADER)];
        let head = LEGACY_AND_HEADER.min(area.len());
        out[..head].copy_from_slice(&area[..head]);
        let mut bv = if area.len() >= XSTATE_BV + 8 {
            u64::from_le_bytes(area[XSTATE_BV..XSTATE_BV + 8].try_into().expect("8 bytes"))
        } else {
            0
        };
        bv &= to.xcr0;
        for &(i, from_off, len) in &self.components {
            let Some(&(_, to_off, to_len)) = to.components.iter().find(|c| c.0 == i) else {
                continue;
            };
            let (from_off, to_off) = (from_off as usize, to_off as usize);
            let len = len.min(to_len) as usize;
            if bv & (1 << i) == 0 || from_off + len > area.len() || to_off + len > out.len() {
                continue;
            }
            out[to_off..to_off + len].copy_from_slice(&area[from_off..from_off + len]);
        }
        // Components only `to` has, or that did not fit, start from their initial state.
        for i in 2u8..63 {
            if bv & (1 << i) != 0
                && !(self.components.iter().any(|c| c.0 == i)
                    && to.components.iter().any(|c| c.0 == i))
            {
                bv &= !(1 << i);
            }
        }
        out[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        // ptrace puts XCR0 in the legacy region's software-reserved bytes (where gdb
        // reads it): say this machine's.
        out[SW_XCR0..SW_XCR0 + 8].copy_from_slice(&to.xcr0.to_le_bytes());
        out
    }
}

/// What a machine that makes images records about itself, beyond the image header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub xsave: XsaveLayout,
    /// The session ran with `--cpu baseline`: x86-64-v2 code only.
    pub cpu_baseline: bool,
    /// The host name the session's programs saw (its UTS namespace's).
    pub hostname: String,
    /// The kernel's vDSO (its `[vdso]` pages): on a kernel with another one, its entry
    /// points are redirected to the new one's (`vdso_proxy`).
    pub vdso: Vec<u8>,
}

/// The kernel's special mappings ([vvar], [vvar_vclock], [vdso]) as (name, size) in
/// address order, from `(name, start, end)` of a process's mappings.
pub fn vdso_layout<'m>(maps: impl Iterator<Item = (&'m str, u64, u64)>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64, u64)> = maps
        .filter(|(n, _, _)| matches!(*n, "[vvar]" | "[vvar_vclock]" | "[vdso]"))
        .map(|(n, s, e)| (n.to_string(), s, e))
        .collect();
    v.sort_by_key(|m| m.1);
    v.into_iter().map(|(n, s, e)| (n, e - s)).collect()
}

/// This kernel's vDSO: the bytes of the `[vdso]` this process has.
pub fn vdso_here() -> Vec<u8> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some((start, end)) = text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (s, e) = f.next()?.split_once('-')?;
        (f.nth(4)? == "[vdso]").then(|| {
            Some((
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            ))
        })?
    }) else {
        return Vec::new();
    };
    let mut bytes = vec![0u8; (end - start) as usize];
    match crate::sys::read_process_memory(std::process::id() as i32, start, &mut bytes) {
        Ok(n) if n == bytes.len() => bytes,
        _ => Vec::new(),
    }
}

/// The functions a vDSO exports, as (name, offset from its start); empty for bytes that
/// are not an ELF image with a dynamic symbol table. Every offset is checked against the
/// image (the bytes come from an image file, and are not trusted).
pub fn vdso_symbols(elf: &[u8]) -> Vec<(String, u64)> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
    };
    let parse = || -> Option<Vec<(String, u64)>> {
        if elf.get(..5)? != b"\x7fELF\x02" {
            return None;
        }
        // The address the image was linked at: its first loadable segment's.
        let (phoff, phentsize, phnum) = (
            u64_at(0x20)? as usize,
            u16_at(0x36)? as usize,
            u16_at(0x38)? as usize,
        );
        let base = (0..phnum.min(64)).find_map(|i| {
            let p = phoff.checked_add(i.checked_mul(phentsize)?)?;
            (u32_at(p)? == 1).then(|| u64_at(p + 0x10))?
        })?;
        let (shoff, shentsize, shnum) = (
            u64_at(0x28)? as usize,
            u16_at(0x3a)? as usize,
            u16_at(0x3c)? as usize,
        );
        let section = |i: usize| -> Option<(u32, usize, usize, u32)> {
            let s = shoff.checked_add(i.checked_mul(shentsize)?)?;
            // (type, offset, size, link)
            Some((
                u32_at(s + 4)?,
                u64_at(s + 0x18)? as usize,
                u64_at(s + 0x20)? as usize,
                u32_at(s + 0x28)?,
            ))
        };
        const SHT_DYNSYM: u32 = 11;
        let (_, symoff, symsize, link) = (0..shnum.min(256))
            .filter_map(section)
            .find(|s| s.0 == SHT_DYNSYM)?;
        let (_, stroff, strsize, _) = section(link as usize)?;
        let strtab = elf.get(stroff..stroff.checked_add(strsize)?)?;
        let mut out = Vec::new();
        for i in 0..symsize / 24 {
            let e = symoff.checked_add(i * 24)?;
            let (name, info, shndx, value) =
                (u32_at(e)?, *elf.get(e + 4)?, u16_at(e + 6)?, u64_at(e + 8)?);
            const STT_FUNC: u8 = 2;
            if info & 0xf != STT_FUNC || shndx == 0 {
                continue;
            }
            let name = strtab.get(name as usize..)?;
            let name = &name[..name.iter().position(|&b| b == 0)?];
            let offset = value.checked_sub(base)?;
            if offset as usize >= elf.len() {
                continue;
            }
            out.push((String::from_utf8_lossy(name).into_owned(), offset));
        }
        Some(out)
    };
    parse().unwrap_or_default()
}

/// The old vDSO made into a proxy for the new one: `old` (the image's vDSO, to be placed
/// at its old address) with each function it exports replaced by a jump to the same
/// function of the new vDSO at `new_base` (whose bytes are `new`), or, where the new one
/// has no such function, by `return -ENOSYS` (glibc then makes the system call). None
/// when the old bytes name no function.
pub fn vdso_proxy(old: &[u8], new: &[u8], new_base: u64) -> Option<Vec<u8>> {
    let theirs = vdso_symbols(old);
    if theirs.is_empty() {
        return None;
    }
    let ours = vdso_symbols(new);
    let mut out = old.to_vec();
    let mut done = std::collections::HashSet::new();
    for (name, off) in theirs {
        if !done.insert(off) {
            continue;
        }
        let at = off as usize;
        let code: Vec<u8> = match ours.iter().find(|(n, _)| *n == name) {
            // jmp *0(%rip); .quad target
            Some((_, new_off)) => [0xff, 0x25, 0, 0, 0, 0]
                .into_iter()
                .chain((new_base + new_off).to_le_bytes())
                .collect(),
            // mov $-ENOSYS, %rax; ret
            None => vec![0x48, 0xc7, 0xc0, 0xda, 0xff, 0xff, 0xff, 0xc3],
        };
        out.get_mut(at..at.checked_add(code.len())?)?
            .copy_from_slice(&code);
    }
    Some(out)
}

/// This kernel's vDSO layout (as it maps it into this process).
pub fn vdso_layout_here() -> Vec<(String, u64)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let maps: Vec<(String, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (s, e) = f.next()?.split_once('-')?;
            let name = f.nth(4).unwrap_or("").to_string();
            Some((
                name,
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            ))
        })
        .collect();
    vdso_layout(maps.iter().map(|(n, s, e)| (n.as_str(), *s, *e)))
}

/// `[vvar] 4 pages, [vdso] 2 pages`
pub fn describe_vdso(layout: &[(String, u64)]) -> String {
    layout
        .iter()
        .map(|(n, size)| format!("{n} {} pages", size / 4096))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one line resume (and `crterm check`) says when the vDSO layouts differ.
pub fn vdso_message(theirs: &[(String, u64)], here: &[(String, u64)]) -> String {
    format!(
        "the image was made on a kernel with another vDSO layout ({}; this kernel: {}) and holds no copy of that vDSO to redirect from",
        describe_vdso(theirs),
        describe_vdso(here)
    )
}

/// Instruction-set features a program may pick code paths by, as /proc/cpuinfo names
/// them: what `--strict-cpu` requires of every one the image's machine had.
pub const ISA_FEATURES: &[&str] = &[
    "sse",
    "sse2",
    "pni",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "popcnt",
    "cx16",
    "lahf_lm",
    "avx",
    "avx2",
    "fma",
    "fma4",
    "f16c",
    "bmi1",
    "bmi2",
    "abm",
    "movbe",
    "adx",
    "aes",
    "pclmulqdq",
    "sha_ni",
    "rdrand",
    "rdseed",
    "erms",
    "fsrm",
    "rtm",
    "xsave",
    "xsaveopt",
    "xsavec",
    "vaes",
    "vpclmulqdq",
    "gfni",
    "avx512f",
    "avx512cd",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vbmi2",
    "avx512_vnni",
    "avx512_bitalg",
    "avx512_vpopcntdq",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "amx_complex",
    "avx_ifma",
    "avx_vnni_int8",
    "avx_ne_convert",
    "avx10",
    "apx",
];

/// The features glibc (2.36 to 2.41) picks code by at start-up: its string and memory
/// functions, libm's, its lazy-binding trampoline and its `glibc-hwcaps` library levels.
/// A session's programs acted on these through glibc whenever its machine had them.
pub const GLIBC_DISPATCH: &[&str] = &[
    "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm", "avx", "avx2", "fma",
    "fma4", "f16c", "bmi1", "bmi2", "abm", "movbe", "erms", "fsrm", "rtm", "xsave", "xsavec",
    "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
];

/// The XSAVE components a process must ask the kernel for before it may use them
/// (ARCH_REQ_XCOMP_PERM): AMX tile data. The others every process may use.
pub const XSAVE_DYNAMIC: u64 = 1 << 18;

/// The features a register state component needs (what its registers are for); empty for
/// the legacy components and those no feature name stands for.
fn component_features(i: u8) -> &'static [&'static str] {
    match i {
        2 => &["avx"],
        5..=7 => &["avx512f"],
        9 => &["pku"],
        17 | 18 => &["amx_tile"],
        19 => &["apx"],
        _ => &[],
    }
}

/// What a CPU must offer to resume an image, and what it lacks that it need not have.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CpuVerdict {
    /// Features the session could have acted on that this CPU lacks: the resume is
    /// refused (unless forced).
    pub missing: Vec<String>,
    /// Register state components the session's threads hold, or its processes were
    /// permitted, that this CPU's XSAVE lacks: refused too (their state would be lost).
    pub missing_components: Vec<String>,
    /// Features the image's machine had, this CPU lacks, and no process could have acted
    /// on through glibc: a warning.
    pub unused: Vec<String>,
}

impl CpuVerdict {
    pub fn refused(&self) -> bool {
        !self.missing.is_empty() || !self.missing_components.is_empty()
    }
}

/// The rule (README, "Resuming on another machine"): a session needs of a CPU what its
/// programs could have acted on: the features glibc picks code by (x86-64-v2 only for a
/// `--cpu baseline` session), the features of the register state components its threads
/// hold or its processes were permitted (`components`, an XSAVE mask; AMX can only be used
/// by a process that asked for it), and the components themselves (`here_xcr0`). The rest
/// of what its machine had is named as a warning; `strict` requires every one of them.
pub fn cpu_verdict(
    image_features: &[String],
    baseline: bool,
    components: u64,
    here: &[String],
    here_xcr0: u64,
    strict: bool,
) -> CpuVerdict {
    let had = |f: &str| image_features.iter().any(|g| g == f);
    let has = |f: &str| here.iter().any(|g| g == f);
    let mut needed: Vec<&str> = if strict {
        ISA_FEATURES.iter().copied().filter(|f| had(f)).collect()
    } else if baseline {
        X86_64_V2.to_vec()
    } else {
        GLIBC_DISPATCH.iter().copied().filter(|f| had(f)).collect()
    };
    let components = components & !0b11;
    for i in 2u8..63 {
        if components & (1 << i) != 0 {
            needed.extend(component_features(i).iter().copied().filter(|f| had(f)));
            // Every AMX feature the machine had, for a process allowed to use AMX.
            if i == 18 {
                needed.extend(
                    ISA_FEATURES
                        .iter()
                        .copied()
                        .filter(|f| f.starts_with("amx_") && had(f)),
                );
            }
        }
    }
    needed.sort_unstable();
    needed.dedup();
    let missing: Vec<String> = needed
        .iter()
        .filter(|f| !has(f))
        .map(|f| f.to_string())
        .collect();
    let missing_components = (2u8..63)
        .filter(|&i| components & (1 << i) != 0 && here_xcr0 & (1 << i) == 0)
        .map(component_name)
        .collect();
    // Only instruction-set features matter; the rest of /proc/cpuinfo's flags (bugs,
    // power management, virtualisation) are no code path.
    let unused: Vec<String> = image_features
        .iter()
        .filter(|f| !has(f) && !missing.contains(f) && ISA_FEATURES.contains(&f.as_str()))
        .cloned()
        .collect();
    CpuVerdict {
        missing,
        missing_components,
        unused,
    }
}

/// The one line resume (and `crterm check`) says when the CPU is refused.
pub fn refusal_message(v: &CpuVerdict, baseline: bool) -> String {
    let mut parts = Vec::new();
    if !v.missing.is_empty() {
        parts.push(if baseline {
            format!(
                "this CPU lacks {} of x86-64-v2, which the session (started with --cpu baseline) needs",
                v.missing.join(", ")
            )
        } else {
            format!(
                "this CPU lacks {} that the session's programs may use (glibc picks code by them, or their registers hold state; `crterm start --cpu baseline` makes sessions that need only x86-64-v2)",
                v.missing.join(", ")
            )
        });
    }
    if !v.missing_components.is_empty() {
        parts.push(format!(
            "this CPU's XSAVE lacks {}, register state the session's threads hold or its processes were allowed to use",
            v.missing_components.join(", ")
        ));
    }
    format!("{}; --force to resume anyway", parts.join("; "))
}

/// The warning resume (and `crterm check`) says for features the session did not need.
pub fn unused_message(v: &CpuVerdict) -> String {
    format!(
        "this CPU lacks {} that the checkpointed machine had; no process of the session could have acted on them through glibc or its register state (a program that probes the CPU itself might: `--strict-cpu` refuses)",
        v.unused.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU that packs AVX-512 right after AVX (no room for MPX, as AMD's do), and QEMU's
    /// `-cpu max` under TCG (MPX, PKRU, no AVX-512: the other-kernel test's guest).
    fn packed_avx512() -> XsaveLayout {
        XsaveLayout {
            xcr0: 0xe7,
            size: 2432,
            components: vec![(2, 576, 256), (5, 832, 64), (6, 896, 512), (7, 1408, 1024)],
        }
    }

    fn qemu_max() -> XsaveLayout {
        XsaveLayout {
            xcr0: 0x21f,
            size: 2696,
            components: vec![(2, 576, 256), (3, 960, 64), (4, 1024, 64), (9, 2688, 8)],
        }
    }

    #[test]
    fn xsave_state_moves_between_layouts_component_by_component() {
        let from = packed_avx512();
        let mut area = vec![0u8; 2432];
        for (i, b) in area[..512].iter_mut().enumerate() {
            *b = i as u8;
        }
        // XCR0 where ptrace writes it.
        area[464..472].copy_from_slice(&0xe7u64.to_le_bytes());
        area[512..520].copy_from_slice(&0xe7u64.to_le_bytes());
        area[576..832].fill(0xaa); // YMM upper halves
        area[832..896].fill(0xbb); // opmask
        let out = from.convert(&qemu_max(), &area);
        assert_eq!(out.len(), 2696);
        assert_eq!(out[..464], area[..464], "legacy region kept");
        assert_eq!(out[472..512], area[472..512]);
        assert!(out[576..832].iter().all(|&b| b == 0xaa), "AVX state moved");
        assert_eq!(
            u64::from_le_bytes(out[512..520].try_into().unwrap()),
            0x07,
            "x87, SSE, AVX kept; AVX-512 dropped"
        );
        assert!(out[832..].iter().all(|&b| b == 0), "nothing else written");
        assert_eq!(u64::from_le_bytes(out[464..472].try_into().unwrap()), 0x21f);
        // And back: the AVX state again at its place.
        let back = qemu_max().convert(&from, &out);
        assert_eq!(back.len(), 2432);
        assert_eq!(back[576..832], area[576..832]);
        assert_eq!(u64::from_le_bytes(back[512..520].try_into().unwrap()), 0x07);
    }

    #[test]
    fn this_kernels_vdso_names_its_functions_and_becomes_a_proxy() {
        let vdso = vdso_here();
        let syms = vdso_symbols(&vdso);
        let clock = syms
            .iter()
            .find(|(n, _)| n == "__vdso_clock_gettime")
            .expect("clock_gettime in the vDSO");
        let proxy = vdso_proxy(&vdso, &vdso, 0x7000_0000_0000).expect("a proxy");
        let at = clock.1 as usize;
        assert_eq!(proxy[at..at + 6], [0xff, 0x25, 0, 0, 0, 0]);
        assert_eq!(
            u64::from_le_bytes(proxy[at + 6..at + 14].try_into().unwrap()),
            0x7000_0000_0000 + clock.1
        );
        // A function the new vDSO lacks fails with ENOSYS.
        let none = vdso_proxy(&vdso, &[], 0).expect("a proxy");
        assert_eq!(
            none[at..at + 8],
            [0x48, 0xc7, 0xc0, 0xda, 0xff, 0xff, 0xff, 0xc3]
        );
        // Bytes that are not an ELF image name nothing.
        assert!(vdso_symbols(&vdso[1..]).is_empty() && vdso_proxy(b"junk", &vdso, 0).is_none());
    }

    #[test]
    fn levels_and_what_a_session_needs_of_a_cpu() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let v2 = names(X86_64_V2);
        assert_eq!(x86_64_level(&v2), 2);
        let mut v4 = v2.clone();
        v4.extend(names(X86_64_V3).into_iter().chain(names(X86_64_V4)));
        assert_eq!(x86_64_level(&v4), 4);
        // A baseline session needs x86-64-v2 only.
        assert!(!cpu_verdict(&v4, true, 0, &v2, 0x3, false).refused());
        // Another needs what glibc picks code by.
        let v = cpu_verdict(&v4, false, 0, &v2, 0x3, false);
        assert!(
            v.missing.contains(&"avx512f".to_string()) && v.missing.contains(&"avx2".to_string())
        );
        // AMX (and AVX-512 FP16, VNNI) the machine had and no process asked for: a warning.
        let mut spr = v4.clone();
        spr.extend(names(&[
            "amx_tile",
            "amx_bf16",
            "amx_int8",
            "avx512_fp16",
            "avx_vnni",
        ]));
        let v = cpu_verdict(&spr, false, 0xe7, &v4, 0xe7, false);
        assert!(!v.refused(), "{v:?}");
        assert_eq!(
            v.unused,
            names(&[
                "amx_tile",
                "amx_bf16",
                "amx_int8",
                "avx512_fp16",
                "avx_vnni"
            ])
        );
        assert!(unused_message(&v).contains("amx_tile, amx_bf16"));
        // A process that was permitted AMX: required, and the components too.
        let v = cpu_verdict(&spr, false, 0xe7 | (1 << 18), &v4, 0xe7, false);
        assert_eq!(v.missing, names(&["amx_bf16", "amx_int8", "amx_tile"]));
        assert_eq!(v.missing_components, names(&["amx-tiledata"]));
        assert!(refusal_message(&v, false).starts_with("this CPU lacks amx_bf16"));
        // --strict-cpu: every feature the machine had.
        let v = cpu_verdict(&spr, false, 0, &v4, 0xe7, true);
        assert!(v.refused() && v.missing.contains(&"avx_vnni".to_string()));
        // Flags that are no instruction set are never named.
        let mut flags = v4.clone();
        flags.push("ibrs_enhanced".into());
        assert_eq!(
            cpu_verdict(&flags, false, 0, &v4, 0xe7, false),
            CpuVerdict::default()
        );
        assert_eq!(
            baseline_environment(Some("glibc.malloc.check=3")),
            format!("glibc.malloc.check=3:{BASELINE_TUNABLES}")
        );
    }
}
