//! The state file: the last message id shown per room, per server (or
//! per cluster: the list of its nodes riftc was given), so a restarted
//! riftc catches up without a gap or a duplicate. Kept under
//! `$XDG_STATE_HOME/riftc/` (`~/.local/state/riftc/`), one JSON file per
//! key, replaced atomically.

use riftd::client::model::SavedState;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Longest file name kept as it is; a longer key is cut and ends with its
/// hash instead (file systems allow 255 bytes).
const NAME_KEPT: usize = 200;

/// The key of the state file for `servers` (`host:port` each, as given):
/// the servers sorted and joined by commas. Message ids are cluster-wide,
/// so the nodes of one cluster share one file whichever node riftc is
/// connected to, and in whatever order they were listed; a single server
/// is its own key, as before lists existed.
pub fn key_for(servers: &[String]) -> String {
    let mut sorted: Vec<&str> = servers.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.join(",")
}

/// The file for `key` (see `key_for`) under `dir`: the name keeps only
/// characters that are safe in a file name, and a very long one is cut
/// and ends with a hash of the whole key.
pub fn path_for(dir: &Path, key: &str) -> PathBuf {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.len() > NAME_KEPT {
        // Every character above became one ASCII byte: cutting is safe.
        name.truncate(NAME_KEPT - 17);
        name = format!("{name}-{:016x}", fnv1a(key.as_bytes()));
    }
    dir.join(format!("{name}.json"))
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases (the
/// standard library's does not promise to), so a long key keeps its file.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The default directory, if the platform has one.
pub fn default_dir() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|home| home.join(".local/state")))
        .map(|dir| dir.join("riftc"))
}

/// Reads the saved state; a missing file is a fresh start, an unreadable
/// one too (said once on stderr by the caller's choice).
pub fn load(path: &Path) -> Result<SavedState, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|error| format!("{}: {error}; starting afresh", path.display())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(SavedState::default()),
        Err(error) => Err(format!("{}: {error}; starting afresh", path.display())),
    }
}

/// Replaces the file with `state`: written beside it, then renamed over
/// it, so a crash leaves the old state or the new one, never half.
pub fn save(path: &Path, state: &SavedState) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(state).map_err(io::Error::other)?)?;
    file.write_all(b"\n")?;
    file.sync_data()?;
    drop(file);
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_reads_back_and_a_missing_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "[::1]:5050");
        assert_eq!(path.file_name().unwrap(), "___1__5050.json");
        assert_eq!(load(&path).unwrap(), SavedState::default());
        let mut state = SavedState::default();
        state.last_shown.insert("lobby".to_owned(), 42);
        state.last_shown.insert("ops".to_owned(), 7);
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        state.last_shown.insert("lobby".to_owned(), 43);
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "h:1");
        fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).unwrap_err().contains("starting afresh"));
    }

    #[test]
    fn a_cluster_keeps_one_file_whatever_the_order_and_one_server_its_old_one() {
        let list = |servers: &[&str]| {
            key_for(&servers.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(list(&["127.0.0.1:5050"]), "127.0.0.1:5050");
        assert_eq!(
            list(&["node-b:5051", "node-a:5050"]),
            "node-a:5050,node-b:5051"
        );
        assert_eq!(
            list(&["node-a:5050", "node-b:5051"]),
            "node-a:5050,node-b:5051"
        );
        let path = path_for(Path::new("/state"), &list(&["node-b:5051", "node-a:5050"]));
        assert_eq!(path, Path::new("/state/node-a_5050_node-b_5051.json"));
    }

    #[test]
    fn a_very_long_key_is_cut_and_told_apart_by_its_hash() {
        let servers: Vec<String> = (0..40)
            .map(|n| format!("node-{n}.example.org:5050"))
            .collect();
        let path = path_for(Path::new("/state"), &key_for(&servers));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), NAME_KEPT + ".json".len());
        assert!(name.starts_with("node-0.example.org_5050_node-1"), "{name}");
        let other = path_for(Path::new("/state"), &key_for(&servers[1..]));
        assert_ne!(path, other);
        // The hash is fixed, not the process's: the same key, the same file.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn server_names_cannot_escape_the_directory() {
        let path = path_for(Path::new("/state"), "../../etc/passwd:1");
        assert_eq!(path, Path::new("/state/.._.._etc_passwd_1.json"));
    }
}
