//! Where accepted messages go: counted and dropped, or spooled durably to a directory.
//!
//! A spooled message is written to `DIR/tmp/<queue id>`, fsynced, renamed to
//! `DIR/new/<queue id>` and the `new` directory fsynced, all before the `250` is sent: a
//! message that got `250` survives a crash or power loss, and a reader of `new/` never sees
//! a half-written file (the maildir discipline).
//!
//! File format: an envelope block, an empty line, then the message as received (unstuffed):
//!
//! ```text
//! Bulkbench-Kind: BULK
//! Bulkbench-Sender: <news@shop.example>
//! Bulkbench-Recipient: <ann@example.org>
//!
//! Subject: ...
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bulk_proto::{Message, QueueId};

/// Where accepted messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkConfig {
    /// Count accepted messages and drop them (benchmarks of the policy path).
    Discard,
    /// Store every accepted message durably under this directory.
    Spool(PathBuf),
}

impl SinkConfig {
    /// Whether the sink needs message bodies kept.
    pub fn keeps_messages(&self) -> bool {
        matches!(self, SinkConfig::Spool(_))
    }
}

/// A spool directory, its `tmp` and `new` subdirectories created.
#[derive(Clone, Debug)]
pub struct Spool {
    tmp: PathBuf,
    new: PathBuf,
}

impl Spool {
    /// Opens (creating if needed) a spool under `dir`.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        let tmp = dir.join("tmp");
        let new = dir.join("new");
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&new)?;
        Ok(Spool { tmp, new })
    }

    /// The envelope block and body of `message`, as written to disk.
    pub fn render(message: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.body.len() + 128);
        out.extend_from_slice(b"Bulkbench-Kind: ");
        out.extend_from_slice(message.kind.verb().as_bytes());
        out.extend_from_slice(b"\r\nBulkbench-Sender: <");
        out.extend_from_slice(message.sender);
        out.extend_from_slice(b">\r\n");
        for recipient in message.recipients.iter() {
            out.extend_from_slice(b"Bulkbench-Recipient: <");
            out.extend_from_slice(recipient);
            out.extend_from_slice(b">\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(message.body);
        out
    }

    /// Stores `contents` durably under `id`; on error nothing is left in `new/`. Blocking:
    /// call from a blocking thread.
    pub fn store(&self, id: QueueId, contents: &[u8]) -> io::Result<PathBuf> {
        let name = id.to_string();
        let tmp = self.tmp.join(&name);
        let new = self.new.join(&name);
        let result = (|| {
            // create_new: never overwrite another message, whatever the id source did.
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &new)?;
            // The rename is durable only once the directory entry is.
            File::open(&self.new)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| new)
    }
}
