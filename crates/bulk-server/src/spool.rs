//! Where accepted messages go: counted and dropped, or spooled durably to a directory.
//!
//! A spooled message is written to `DIR/tmp/<queue id>` as it arrives (its envelope, then
//! its content in chunks: a large message never sits whole in memory), then at its end
//! fsynced, renamed to `DIR/new/<queue id>` and the `new` directory fsynced, all before the
//! `250` is sent: a message that got `250` survives a crash or power loss, and a reader of
//! `new/` never sees a half-written file (the maildir discipline). A message refused at its
//! end, or whose connection ends before it does, has its temporary file removed.
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

    /// The envelope block of `message`, the empty line that ends it included: what a
    /// spool file holds before the content.
    pub fn envelope(message: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
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
        out
    }

    /// Starts the file of message `id` in `tmp/`, beginning with `head` (its envelope
    /// block, [`Spool::envelope`]); the content follows with [`Draft::append`]. Blocking:
    /// call from a blocking thread.
    pub fn create(&self, id: QueueId, head: &[u8]) -> io::Result<Draft> {
        let tmp = self.tmp.join(id.to_string());
        // create_new: never overwrite another message, whatever the id source did.
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut draft = Draft {
            id,
            tmp,
            file: Some(file),
        };
        draft.append(head)?;
        Ok(draft)
    }

    /// Makes `draft` a spooled message: fsyncs it, renames it into `new/` and fsyncs that
    /// directory, so that it survives a crash once this returns. On error nothing is left
    /// in `new/` and the temporary file is removed. Blocking: call from a blocking thread.
    pub fn commit(&self, mut draft: Draft) -> io::Result<PathBuf> {
        let new = self.new.join(draft.id.to_string());
        let Some(file) = draft.file.take() else {
            return Err(io::Error::other("the draft was committed"));
        };
        file.sync_all()?;
        drop(file);
        fs::rename(&draft.tmp, &new)?;
        // Renamed: the draft no longer owns a temporary file to remove.
        draft.tmp = PathBuf::new();
        // The rename is durable only once the directory entry is.
        File::open(&self.new)?.sync_all()?;
        Ok(new)
    }
}

/// A message being written to the spool's `tmp/`, content chunk by content chunk. It
/// becomes a spooled message only through [`Spool::commit`]; dropped before, it removes
/// its temporary file (a refused or abandoned message leaves nothing behind). Blocking to
/// drop while it holds a file: drop it on a blocking thread.
#[derive(Debug)]
pub struct Draft {
    id: QueueId,
    /// The temporary file; empty once renamed into `new/`.
    tmp: PathBuf,
    file: Option<File>,
}

impl Draft {
    /// The queue id the message is spooled under.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Appends `bytes` to the file. Blocking: call from a blocking thread.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => Err(io::Error::other("the draft was committed")),
        }
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        self.file = None;
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
