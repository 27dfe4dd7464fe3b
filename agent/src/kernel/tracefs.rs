//! tracefs: mount it when it is missing (it is not mounted at boot on our machines) and read
//! tracepoint field offsets from `events/CAT/NAME/format`.
use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use crate::error::AgentError;

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Make sure `/sys/kernel/tracing/events` exists, mounting tracefs if needed.
pub fn ensure_mounted() -> Result<PathBuf, AgentError> {
    let root = Path::new(TRACEFS);
    if root.join("events").is_dir() {
        return Ok(root.to_path_buf());
    }
    let debug = Path::new("/sys/kernel/debug/tracing");
    if debug.join("events").is_dir() {
        return Ok(debug.to_path_buf());
    }
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (src, dst, ty) = (c("tracefs"), c(TRACEFS), c("tracefs"));
    // SAFETY: plain mount(2) with valid C strings.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 || !root.join("events").is_dir() {
        return Err(AgentError::Tracefs(std::io::Error::last_os_error().to_string()));
    }
    log::info!("mounted tracefs on {TRACEFS}");
    Ok(root.to_path_buf())
}

/// Field offsets of one tracepoint.
#[derive(Debug, Default, Clone)]
pub struct Format {
    fields: Vec<(String, u32)>,
}

impl Format {
    pub fn read(root: &Path, category: &str, name: &str) -> Option<Format> {
        fs::read_to_string(root.join("events").join(category).join(name).join("format")).ok().map(|t| Format::parse(&t))
    }

    /// Parse the `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;` lines.
    pub fn parse(text: &str) -> Format {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut parts = rest.split(';');
            let decl = parts.next().unwrap_or("").trim();
            let Some(offset) =
                parts.find_map(|p| p.trim().strip_prefix("offset:")).and_then(|o| o.trim().parse::<u32>().ok())
            else {
                continue;
            };
            // The name is the last word of the declaration, minus any array suffix.
            let name = decl.rsplit(' ').next().unwrap_or("");
            let name = name.split('[').next().unwrap_or(name);
            fields.push((name.to_string(), offset));
        }
        Format { fields }
    }

    pub fn offset(&self, field: &str) -> Option<u32> {
        self.fields.iter().find(|(n, _)| n == field).map(|&(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_stat_format() {
        let text = "name: rss_stat\nID: 646\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:unsigned int mm_id;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:unsigned int curr;\toffset:12;\tsize:4;\tsigned:0;\n\
\tfield:int member;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:long size;\toffset:24;\tsize:8;\tsigned:1;\n\
\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;\n\
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
print fmt: \"mm_id=%u\"\n";
        let f = Format::parse(text);
        assert_eq!(f.offset("mm_id"), Some(8));
        assert_eq!(f.offset("curr"), Some(12));
        assert_eq!(f.offset("member"), Some(16));
        assert_eq!(f.offset("size"), Some(24));
        assert_eq!(f.offset("args"), Some(16));
        assert_eq!(f.offset("parent_comm"), Some(8));
        assert_eq!(f.offset("nope"), None);
    }
}
