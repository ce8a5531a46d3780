//! Reading a file the configuration names (the config file, the password,
//! users, certificate and key files): a regular file of bounded size,
//! opened non-blocking so that no FIFO can stall the caller; and naming a
//! file's type for messages. It never parses what it reads.

use std::path::Path;

/// The most bytes riftd reads from each file the configuration names: far
/// beyond any real file of that kind, so that a path pointing at something
/// huge by mistake (a disk image, a log) is refused instead of read whole.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
pub const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;
/// About 450,000 accounts.
pub const MAX_USERS_FILE_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a file the configuration names (the config file itself, the
/// password, users, certificate and key files): a regular file (symlinks
/// are followed) of at most `max` bytes. It is opened non-blocking, so a
/// FIFO can never block the caller — at start, or on SIGHUP on the event
/// loop, where a FIFO would freeze every client — and is then refused, as
/// are directories and sockets. A character device is read like a file
/// (`--config /dev/null` is an empty config), within the same bound, so
/// `/dev/zero` or a huge file is refused without being read whole.
pub fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let metadata = file.metadata()?;
    let file_type = metadata.file_type();
    if !file_type.is_file() && !file_type.is_char_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "it is {}, not a regular file",
                describe_file_type(&file_type)
            ),
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {max} bytes, more than such a file can be"),
        )
    };
    if metadata.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// `read_regular_file` as UTF-8 text.
pub fn read_regular_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path, max)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// "a symlink", "a directory", "a character device", … for messages.
pub fn describe_file_type(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use std::path::PathBuf;

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn a_fifo_a_device_a_directory_or_a_huge_file_is_refused_without_blocking_or_reading_it_whole()
    {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'#'; 2048]).unwrap();
        for (path, expected) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "larger than 1024 bytes"),
            (dir.path(), "a directory"),
            (huge.as_path(), "larger than 1024 bytes"),
        ] {
            let error = read_regular_file(path, 1024).unwrap_err().to_string();
            assert!(error.contains(expected), "{}: {error}", path.display());
        }
        // Every configured file goes through it: a FIFO as the config file,
        // the password file, the users file or a TLS file is refused.
        let error = RawConfig::from_file(&fifo).unwrap_err().to_string();
        assert!(error.contains("a FIFO"), "{error}");
        for key in ["password_file", "users_file", "tls_cert"] {
            let text = match key {
                "password_file" => "auth = \"password\"",
                "users_file" => "auth = \"accounts\"",
                _ => "tls_listen = \"127.0.0.1:0\"",
            };
            let mut config = RawConfig::from_toml(text).unwrap();
            config.history_file = PathBuf::new();
            match key {
                "password_file" => config.password_file = Some(fifo.clone()),
                "users_file" => config.users_file = Some(fifo.clone()),
                _ => {
                    // One PEM file may hold both: not two jobs for one file.
                    config.tls_cert = Some(fifo.clone());
                    config.tls_key = Some(fifo.clone());
                }
            }
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("a FIFO"), "{key}: {error}");
        }
        std::fs::write(&huge, "ok\n").unwrap();
        assert_eq!(read_regular_file(&huge, 1024).unwrap(), b"ok\n");
        assert!(
            read_regular_file(Path::new("/dev/null"), 1024)
                .unwrap()
                .is_empty()
        );
    }
}
