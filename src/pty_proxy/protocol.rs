//! Messages between a client and a session daemon over the control socket.
//!
//! A frame is one type byte, a little-endian u32 payload length, and the payload. Frames
//! are small except `Output`/`Input`, whose payloads are raw terminal bytes.

use std::io;

pub const MAX_FRAME: usize = 4 << 20;

/// What a checkpoint is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointOrder {
    /// End the session once the image is written.
    pub exit: bool,
    /// Where (empty: the session's image path; `-`: the stream sent with the order).
    pub path: String,
    /// Seconds to wait for the session to hold no connection to the outside (0: do not
    /// wait; connections come back closed).
    pub wait: u32,
    /// Open regular files up to this size are carried in the image.
    pub carry_files: u64,
    /// A standalone image, whatever the last checkpoint left to refer to.
    pub full: bool,
    /// Copy memory while the session runs first: `Some(true)` always, `Some(false)`
    /// never, `None` for large sessions.
    pub precopy: Option<bool>,
}

impl CheckpointOrder {
    /// A checkpoint from the keyboard: to the session's image, with the defaults.
    pub fn from_keys(exit: bool) -> CheckpointOrder {
        CheckpointOrder {
            exit,
            path: String::new(),
            wait: 0,
            carry_files: crate::records::DEFAULT_CARRY_FILES,
            full: false,
            precopy: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToDaemon {
    /// Attach with the client's terminal size and the path of its terminal (empty when it
    /// has none the daemon could open); the daemon answers with a repaint.
    Attach {
        cols: u16,
        rows: u16,
        tty: String,
    },
    Input(Vec<u8>),
    Resize {
        cols: u16,
        rows: u16,
    },
    Detach,
    Checkpoint(CheckpointOrder),
    Redraw,
    /// Show the help box for this prefix key.
    Help {
        prefix: u8,
    },
    /// For `crterm ls`: answered with `Info`, then the connection closes.
    Info,
    /// What SIGTERM to the daemon does: checkpoint the session into its image, within
    /// the shutdown deadline, and end it.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    Output(Vec<u8>),
    /// The session ended; the client exits with this status.
    Exit(i32),
    /// The client is detached (by its own request, or because another client attached).
    Detached(String),
    Info(SessionInfo),
    /// The daemon will not serve this client, and says why.
    Refused(String),
    /// How a checkpoint went, in one line.
    Checkpointed {
        ok: bool,
        text: String,
    },
    /// To a watching client: the session has ended; the status `start --wait` exits with
    /// (`REQUEUE_STATUS` when a shutdown checkpointed it) and what happened, in lines.
    Ended {
        status: i32,
        text: String,
    },
}

/// The exit status of `crterm start --wait` whose session was checkpointed on a
/// scheduler's (or a shutdown's) signal and ended: "checkpointed, run me again", the value
/// HTCondor's self-checkpointing convention uses and Slurm's `RequeueExit` can name.
pub const REQUEUE_STATUS: i32 = 85;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub name: String,
    pub command: String,
    pub daemon_pid: i32,
    pub started_unix: u64,
    pub attached: bool,
    /// Where its checkpoints go unless told otherwise.
    pub image: String,
}

/// Append an `Output` frame straight into a send buffer (the hot path: no copy of the
/// terminal bytes but this one).
pub fn push_output(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(5 + bytes.len());
    out.push(101);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn size_payload(cols: u16, rows: u16) -> [u8; 4] {
    let c = cols.to_le_bytes();
    let r = rows.to_le_bytes();
    [c[0], c[1], r[0], r[1]]
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad {what} message"))
}

fn size_of(p: &[u8]) -> io::Result<(u16, u16)> {
    if p.len() != 4 {
        return Err(bad("size"));
    }
    Ok((
        u16::from_le_bytes([p[0], p[1]]),
        u16::from_le_bytes([p[2], p[3]]),
    ))
}

fn text(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl ToDaemon {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToDaemon::Attach { cols, rows, tty } => {
                let mut p = size_payload(*cols, *rows).to_vec();
                p.extend_from_slice(tty.as_bytes());
                frame(1, &p)
            }
            ToDaemon::Input(b) => frame(2, b),
            ToDaemon::Resize { cols, rows } => frame(3, &size_payload(*cols, *rows)),
            ToDaemon::Detach => frame(4, &[]),
            ToDaemon::Checkpoint(o) => {
                // Flags: 1 end the session, 2 a full image, 4 pre-copy always, 8 never.
                let mut p = vec![
                    u8::from(o.exit)
                        | u8::from(o.full) << 1
                        | u8::from(o.precopy == Some(true)) << 2
                        | u8::from(o.precopy == Some(false)) << 3,
                ];
                p.extend_from_slice(&o.wait.to_le_bytes());
                p.extend_from_slice(&o.carry_files.to_le_bytes());
                p.extend_from_slice(o.path.as_bytes());
                frame(5, &p)
            }
            ToDaemon::Redraw => frame(6, &[]),
            ToDaemon::Info => frame(7, &[]),
            ToDaemon::Help { prefix } => frame(8, &[*prefix]),
            ToDaemon::Shutdown => frame(9, &[]),
        }
    }

    pub fn decode(kind: u8, p: &[u8]) -> io::Result<ToDaemon> {
        Ok(match kind {
            1 => {
                if p.len() < 4 {
                    return Err(bad("attach"));
                }
                let (cols, rows) = size_of(&p[..4])?;
                ToDaemon::Attach {
                    cols,
                    rows,
                    tty: text(&p[4..]),
                }
            }
            2 => ToDaemon::Input(p.to_vec()),
            3 => {
                let (cols, rows) = size_of(p)?;
                ToDaemon::Resize { cols, rows }
            }
            4 => ToDaemon::Detach,
            5 => {
                if p.len() < 13 {
                    return Err(bad("checkpoint"));
                }
                ToDaemon::Checkpoint(CheckpointOrder {
                    exit: p[0] & 1 != 0,
                    full: p[0] & 2 != 0,
                    precopy: match p[0] & 12 {
                        4 => Some(true),
                        8 => Some(false),
                        _ => None,
                    },
                    wait: u32::from_le_bytes(p[1..5].try_into().expect("4 bytes")),
                    carry_files: u64::from_le_bytes(p[5..13].try_into().expect("8 bytes")),
                    path: text(&p[13..]),
                })
            }
            6 => ToDaemon::Redraw,
            7 => ToDaemon::Info,
            8 => ToDaemon::Help {
                prefix: *p.first().ok_or_else(|| bad("help"))?,
            },
            9 => ToDaemon::Shutdown,
            _ => return Err(bad("unknown")),
        })
    }
}

impl ToClient {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToClient::Output(b) => frame(101, b),
            ToClient::Exit(code) => frame(103, &code.to_le_bytes()),
            ToClient::Detached(s) => frame(104, s.as_bytes()),
            ToClient::Info(i) => frame(
                105,
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    i.name,
                    i.daemon_pid,
                    i.started_unix,
                    u8::from(i.attached),
                    i.image.replace(['\t', '\n'], " "),
                    i.command.replace(['\t', '\n'], " ")
                )
                .as_bytes(),
            ),
            ToClient::Refused(s) => frame(106, s.as_bytes()),
            ToClient::Checkpointed { ok, text } => {
                let mut p = vec![u8::from(*ok)];
                p.extend_from_slice(text.as_bytes());
                frame(107, &p)
            }
            ToClient::Ended { status, text } => {
                let mut p = status.to_le_bytes().to_vec();
                p.extend_from_slice(text.as_bytes());
                frame(108, &p)
            }
        }
    }

    pub fn decode(kind: u8, p: &[u8]) -> io::Result<ToClient> {
        Ok(match kind {
            101 => ToClient::Output(p.to_vec()),
            103 => ToClient::Exit(i32::from_le_bytes(p.try_into().map_err(|_| bad("exit"))?)),
            104 => ToClient::Detached(text(p)),
            105 => {
                let t = text(p);
                let f: Vec<&str> = t.splitn(6, '\t').collect();
                if f.len() != 6 {
                    return Err(bad("info"));
                }
                ToClient::Info(SessionInfo {
                    name: f[0].to_string(),
                    daemon_pid: f[1].parse().map_err(|_| bad("info"))?,
                    started_unix: f[2].parse().map_err(|_| bad("info"))?,
                    attached: f[3] == "1",
                    image: f[4].to_string(),
                    command: f[5].to_string(),
                })
            }
            106 => ToClient::Refused(text(p)),
            107 => ToClient::Checkpointed {
                ok: p.first() == Some(&1),
                text: text(p.get(1..).unwrap_or_default()),
            },
            108 => ToClient::Ended {
                status: i32::from_le_bytes(
                    p.get(..4)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| bad("ended"))?,
                ),
                text: text(&p[4..]),
            },
            _ => return Err(bad("unknown")),
        })
    }
}

/// Bytes waiting to be sent or parsed, consumed from the front without moving the rest
/// each time (it is compacted only when the consumed part is the larger one).
#[derive(Default)]
pub struct ByteQueue {
    buf: Vec<u8>,
    start: usize,
}

impl ByteQueue {
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// For writing a frame in place.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// Collects bytes from a stream and cuts them into frames.
#[derive(Default)]
pub struct FrameReader {
    queue: ByteQueue,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.queue.push(bytes);
    }

    /// The next whole frame as (kind, payload), if one has arrived.
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        let b = self.queue.pending();
        if b.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        if b.len() < 5 + len {
            return Ok(None);
        }
        let kind = b[0];
        let payload = b[5..5 + len].to_vec();
        self.queue.consume(5 + len);
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_split_anywhere() {
        let msgs = vec![
            ToClient::Output(b"hello\x1b[0m".to_vec()),
            ToClient::Checkpointed {
                ok: true,
                text: "wrote x".into(),
            },
            ToClient::Exit(-3),
            ToClient::Ended {
                status: REQUEUE_STATUS,
                text: "checkpointed".into(),
            },
            ToClient::Info(SessionInfo {
                name: "a".into(),
                command: "vim x".into(),
                daemon_pid: 7,
                started_unix: 9,
                attached: true,
                image: "/d/a.img".into(),
            }),
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.encode()).collect();
        for split in 0..bytes.len() {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for chunk in [&bytes[..split], &bytes[split..]] {
                r.push(chunk);
                while let Some((k, p)) = r.next_frame().unwrap() {
                    got.push(ToClient::decode(k, &p).unwrap());
                }
            }
            assert_eq!(got, msgs);
        }
    }
}
