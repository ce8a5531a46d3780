//! The state file: the last message id shown per room, per server, so a
//! restarted riftc catches up without a gap or a duplicate. Kept under
//! `$XDG_STATE_HOME/riftc/` (`~/.local/state/riftc/`), one JSON file per
//! server, replaced atomically.

use riftd::client::model::SavedState;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file for `server` (`host:port`) under `dir`: the name keeps only
/// characters that are safe in a file name.
pub fn path_for(dir: &Path, server: &str) -> PathBuf {
    let name: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.json"))
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
    fn server_names_cannot_escape_the_directory() {
        let path = path_for(Path::new("/state"), "../../etc/passwd:1");
        assert_eq!(path, Path::new("/state/.._.._etc_passwd_1.json"));
    }
}
