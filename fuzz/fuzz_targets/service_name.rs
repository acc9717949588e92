//! [`validate_name`] on any bytes, against the rule written out again: 1 to 64
//! bytes of ASCII letters, digits, `.`, `_` and `-`, not starting with `.`. So
//! an accepted name is one plain path component (no `/`, no NUL, not `..`),
//! and a socket path built from it stays in the run directory.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use libipc::service::{MAX_NAME_LEN, socket_path, validate_name};

fuzz_target!(|name: &[u8]| {
    let rule = (1..=MAX_NAME_LEN).contains(&name.len())
        && name[0] != b'.'
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b));
    let rundir = Path::new("/run/libipc");
    match validate_name(name) {
        Ok(s) => {
            assert!(rule, "accepted {name:?}");
            assert_eq!(s.as_bytes(), name);
            assert!(!s.contains(['/', '\0']) && s != "." && s != "..");
            let components: Vec<_> = Path::new(s).components().collect();
            assert_eq!(components, [Component::Normal(s.as_ref())]);
            let path = socket_path(rundir, name).unwrap();
            assert_eq!(path.parent(), Some(rundir));
            assert_eq!(path.file_name(), Some(s.as_ref()));
        }
        Err(e) => {
            assert!(!rule, "refused {name:?}: {e}");
            assert!(socket_path(rundir, name).is_err());
        }
    }
});
