//! User names of uids (the system's passwd database, through getpwuid_r), looked up once each.
use std::{collections::HashMap, ffi::CStr};

#[derive(Default)]
pub struct Users(HashMap<u32, String>);

impl Users {
    /// `uid`'s login name, or its number when it has none.
    pub fn name(&mut self, uid: u32) -> &str {
        self.0.entry(uid).or_insert_with(|| lookup(uid).unwrap_or_else(|| uid.to_string()))
    }
}

fn lookup(uid: u32) -> Option<String> {
    let mut len = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: a zeroed passwd struct; getpwuid_r writes its strings into `buf`, which lives
        // until the name is copied out.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
            if rc == libc::ERANGE && len < 1 << 20 {
                len *= 4;
                continue;
            }
            if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
                return None;
            }
            return Some(CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_root_a_uid_without_a_name_is_its_number() {
        let mut u = Users::default();
        assert_eq!(u.name(0), "root");
        assert_eq!(u.name(3_999_999_999), "3999999999");
    }
}
