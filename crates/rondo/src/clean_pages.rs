//! Gives back, once start-up or a reload is done, the resident pages of the code and constants
//! it used and a running balancer does not.
//!
//! Starting `rondo serve` runs code that never runs again until the next reload (argument
//! parsing, the configuration's parser and checks, logging and runtime set-up, the dynamic
//! loader's relocation of every library), and the kernel maps 64 KiB around every page of a
//! file it faults in. So a fresh process holds about 2 MB of pages of its own binary, libc,
//! libm and the dynamic loader that it will not touch while it serves (`docs/performance.md`,
//! "Memory"). These pages are clean copies of files: the page cache keeps them, and a process
//! that jumps to one again gets it back with a minor fault. So, as the Linux kernel frees its
//! `__init` code after boot, rondo asks the kernel to unmap them (`MADV_DONTNEED`) once it is
//! serving; the pages it does use come back at their first use, within milliseconds.
//!
//! Only mappings whose content is the file's, byte for byte, are given back: file-backed, not
//! writable, with no anonymous (copied-on-write) page. The relocated read-only data (RELRO)
//! and any page a debugger patched hold anonymous pages and are left alone, as is everything
//! writable. Unmapping such a mapping cannot change what the process reads from it, only when
//! its pages are resident.

use std::io;

/// What [`release`] gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings unmapped.
    pub mappings: usize,
    /// Their resident memory before, in KiB.
    pub kib: u64,
}

/// Unmaps every clean, read-only, file-backed mapping of this process (see the module doc).
/// Errors only when `/proc/self/smaps` cannot be read; a mapping the kernel refuses is skipped.
pub fn release() -> io::Result<Released> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    for mapping in clean_mappings(&smaps) {
        if unmap(mapping.start, mapping.end - mapping.start) {
            released.mappings += 1;
            released.kib += mapping.rss_kib;
        }
    }
    Ok(released)
}

/// One mapping of `/proc/self/smaps` that may be given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CleanMapping {
    start: usize,
    end: usize,
    rss_kib: u64,
}

/// The mappings of an smaps listing that are file-backed (a path, not `[vdso]` and the like),
/// readable but not writable, with resident pages and no anonymous page.
fn clean_mappings(smaps: &str) -> Vec<CleanMapping> {
    let mut found = Vec::new();
    // The mapping being read, if it qualifies so far, and its Rss and Anonymous fields.
    let mut current: Option<CleanMapping> = None;
    let mut anonymous_kib: Option<u64> = None;
    let mut finish = |current: Option<CleanMapping>, anonymous_kib: Option<u64>| {
        if let (Some(mapping), Some(0)) = (current, anonymous_kib)
            && mapping.rss_kib > 0
        {
            found.push(mapping);
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            finish(current.take(), anonymous_kib.take());
            current = header;
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let kib = value.parse::<u64>().ok();
        match key {
            "Rss:" => {
                if let (Some(mapping), Some(kib)) = (current.as_mut(), kib) {
                    mapping.rss_kib = kib;
                }
            }
            // Unparsable counts as anonymous: the mapping is left alone.
            "Anonymous:" => anonymous_kib = Some(kib.unwrap_or(u64::MAX)),
            _ => {}
        }
    }
    finish(current, anonymous_kib);
    found
}

/// Reads a mapping's first line (`start-end perms offset device inode path`): `None` for any
/// other line, `Some(None)` for a mapping that does not qualify, `Some(Some(_))` for one that
/// may, its resident size still to be read.
fn mapping_header(line: &str) -> Option<Option<CleanMapping>> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?.as_bytes();
    let path = fields.nth(3).unwrap_or("");
    let qualifies =
        perms.len() == 4 && perms[0] == b'r' && perms[1] == b'-' && path.starts_with('/');
    Some(qualifies.then_some(CleanMapping {
        start,
        end,
        rss_kib: 0,
    }))
}

/// `madvise(MADV_DONTNEED)` on one mapping read from `/proc/self/smaps`; false if refused.
fn unmap(start: usize, len: usize) -> bool {
    // SAFETY: the range is a whole mapping of this process, read-only, backed by a file and
    // holding no anonymous page (`clean_mappings`), so dropping its page table entries loses
    // nothing: each page reads the same when it is faulted in again from the file. No Rust
    // reference is invalidated, as the memory stays mapped and its content does not change.
    #[allow(unsafe_code)]
    let result = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    result == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55edcfda8000-55edcffcf000 r--p 00000000 fe:00 10010643                   /usr/bin/rondo
Size:               2204 kB
Rss:                 960 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55edcffcf000-55edd07ca000 r-xp 00226000 fe:00 10010643                   /usr/bin/rondo
Rss:                1748 kB
Anonymous:             0 kB
55edd07ca000-55edd0800000 r--p 00a20000 fe:00 10010643                   /usr/bin/rondo
Rss:                 216 kB
Anonymous:           216 kB
55edd0800000-55edd0805000 rw-p 00a55000 fe:00 10010643                   /usr/bin/rondo
Rss:                  20 kB
Anonymous:            20 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Rss:                 132 kB
Anonymous:           132 kB
7f1000000000-7f1000010000 r-xp 00000000 fe:00 77 /usr/lib/libm.so.6 (deleted)
Rss:                   0 kB
Anonymous:             0 kB
7f2000000000-7f2000001000 r--s 00000000 fe:00 78 /dev/shm/with space
Rss:                   4 kB
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_with_resident_pages_are_given_back() {
        let found = clean_mappings(SMAPS);
        let starts: Vec<usize> = found.iter().map(|m| m.start).collect();
        assert_eq!(
            starts,
            [0x55ed_cfda_8000, 0x55ed_cffc_f000, 0x7f20_0000_0000]
        );
        assert_eq!(found[1].end, 0x55ed_d07c_a000);
        assert_eq!(found.iter().map(|m| m.rss_kib).sum::<u64>(), 960 + 1748 + 4);
    }

    #[test]
    fn a_mapping_without_an_anonymous_count_is_left_alone() {
        let smaps = "1000-2000 r-xp 00000000 fe:00 1 /usr/bin/rondo\nRss: 4 kB\n";
        assert!(clean_mappings(smaps).is_empty());
        let smaps = "1000-2000 r-xp 00000000 fe:00 1 /usr/bin/rondo\nRss: 4 kB\nAnonymous: x kB\n";
        assert!(clean_mappings(smaps).is_empty());
    }

    #[test]
    fn releasing_keeps_code_and_constants_working() {
        let before = format!(
            "{:?}",
            std::hint::black_box(vec![1.5_f64.exp(), 2.0_f64.ln()])
        );
        let released = release().unwrap();
        assert!(released.mappings > 0, "{released:?}");
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let resident_again: u64 = clean_mappings(&smaps).iter().map(|m| m.rss_kib).sum();
        assert!(
            resident_again < released.kib,
            "{resident_again} KiB of {released:?}"
        );
        // Code, constants and libm's tables, faulted in again after being unmapped.
        let after = format!(
            "{:?}",
            std::hint::black_box(vec![1.5_f64.exp(), 2.0_f64.ln()])
        );
        assert_eq!(before, after);
    }
}
