//! memif 2.0 control messages: the 128-byte wire format, encode/decode and
//! syntax validation.
//!
//! Every message is exactly [`MSG_SIZE`] bytes, little-endian, packed. The
//! decoder checks *syntax* only (size, type, NUL-terminated strings, fields
//! that must be zero); meaning-level checks (sequence, counts, secrets) are
//! the handshake's job in [`super::master`] and [`super::slave`].

use std::fmt;

/// Size of every control message on the wire.
pub const MSG_SIZE: usize = 128;
/// Protocol version 2.0 (`major << 8 | minor`).
pub const VERSION: u16 = 0x0200;
/// Value each ring header must carry in its `cookie` field.
pub const RING_COOKIE: u32 = 0x03E3_1F20;
/// Width of the name fields (at most 31 characters plus NUL).
pub const NAME_LEN: usize = 32;
/// Width of the secret field (at most 23 characters plus NUL).
pub const SECRET_LEN: usize = 24;
/// Width of the disconnect reason (at most 95 characters plus NUL).
pub const REASON_LEN: usize = 96;
/// `ADD_RING` flag: the ring carries slave-to-master traffic.
pub const RING_FLAG_S2M: u16 = 1;

/// Message type, the u16 at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    None = 0,
    Ack = 1,
    Hello = 2,
    Init = 3,
    AddRegion = 4,
    AddRing = 5,
    Connect = 6,
    Connected = 7,
    Disconnect = 8,
}

impl TryFrom<u16> for MsgType {
    type Error = WireError;
    fn try_from(v: u16) -> Result<Self, WireError> {
        Ok(match v {
            0 => MsgType::None,
            1 => MsgType::Ack,
            2 => MsgType::Hello,
            3 => MsgType::Init,
            4 => MsgType::AddRegion,
            5 => MsgType::AddRing,
            6 => MsgType::Connect,
            7 => MsgType::Connected,
            8 => MsgType::Disconnect,
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// Interface mode, the `mode` byte of INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Ethernet,
    Ip,
    PuntInject,
}

impl Mode {
    pub fn as_u8(self) -> u8 {
        match self {
            Mode::Ethernet => 0,
            Mode::Ip => 1,
            Mode::PuntInject => 2,
        }
    }
}

impl TryFrom<u8> for Mode {
    type Error = WireError;
    fn try_from(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Mode::Ethernet),
            1 => Ok(Mode::Ip),
            2 => Ok(Mode::PuntInject),
            other => Err(WireError::BadMode(other)),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Ethernet => "ethernet",
            Mode::Ip => "ip",
            Mode::PuntInject => "punt-inject",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ethernet" | "eth" => Ok(Mode::Ethernet),
            "ip" => Ok(Mode::Ip),
            "punt-inject" | "inject-punt" => Ok(Mode::PuntInject),
            other => Err(format!(
                "unknown memif mode {other:?} (expected ethernet, ip or punt-inject)"
            )),
        }
    }
}

/// HELLO: the master's limits. The `max_*` fields are maximum *indices*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub name: String,
    pub min_version: u16,
    pub max_version: u16,
    pub max_region: u16,
    pub max_m2s_ring: u16,
    pub max_s2m_ring: u16,
    pub max_log2_ring_size: u8,
}

/// INIT: the slave names the interface it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    pub version: u16,
    pub id: u32,
    pub mode: Mode,
    pub secret: String,
    pub name: String,
}

/// ADD_REGION: a shared-memory region; the memfd travels as SCM_RIGHTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddRegion {
    pub index: u16,
    pub size: u64,
}

/// ADD_RING: a ring inside a region; its eventfd travels as SCM_RIGHTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddRing {
    pub flags: u16,
    pub index: u16,
    pub region: u16,
    pub offset: u32,
    pub log2_ring_size: u8,
    pub private_hdr_size: u16,
}

impl AddRing {
    /// True for slave-to-master rings.
    pub fn is_s2m(&self) -> bool {
        self.flags & RING_FLAG_S2M != 0
    }
}

/// DISCONNECT: a code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u32,
    pub reason: String,
}

/// A decoded control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ack,
    Hello(Hello),
    Init(Init),
    AddRegion(AddRegion),
    AddRing(AddRing),
    Connect { if_name: String },
    Connected { if_name: String },
    Disconnect(Disconnect),
}

impl Message {
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Ack => MsgType::Ack,
            Message::Hello(_) => MsgType::Hello,
            Message::Init(_) => MsgType::Init,
            Message::AddRegion(_) => MsgType::AddRegion,
            Message::AddRing(_) => MsgType::AddRing,
            Message::Connect { .. } => MsgType::Connect,
            Message::Connected { .. } => MsgType::Connected,
            Message::Disconnect(_) => MsgType::Disconnect,
        }
    }

    /// Whether this message must carry a file descriptor.
    pub fn needs_fd(&self) -> bool {
        matches!(self, Message::AddRegion(_) | Message::AddRing(_))
    }

    /// Encodes into a fixed 128-byte buffer. Strings longer than their field
    /// allows are truncated so the NUL always fits.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        put_u16(&mut b, 0, self.msg_type() as u16);
        match self {
            Message::Ack => {}
            Message::Hello(h) => {
                put_str(&mut b, 2, NAME_LEN, &h.name);
                put_u16(&mut b, 34, h.min_version);
                put_u16(&mut b, 36, h.max_version);
                put_u16(&mut b, 38, h.max_region);
                put_u16(&mut b, 40, h.max_m2s_ring);
                put_u16(&mut b, 42, h.max_s2m_ring);
                b[44] = h.max_log2_ring_size;
            }
            Message::Init(i) => {
                put_u16(&mut b, 2, i.version);
                put_u32(&mut b, 4, i.id);
                b[8] = i.mode.as_u8();
                put_str(&mut b, 9, SECRET_LEN, &i.secret);
                put_str(&mut b, 33, NAME_LEN, &i.name);
            }
            Message::AddRegion(r) => {
                put_u16(&mut b, 2, r.index);
                b[4..12].copy_from_slice(&r.size.to_le_bytes());
            }
            Message::AddRing(r) => {
                put_u16(&mut b, 2, r.flags);
                put_u16(&mut b, 4, r.index);
                put_u16(&mut b, 6, r.region);
                put_u32(&mut b, 8, r.offset);
                b[12] = r.log2_ring_size;
                put_u16(&mut b, 13, r.private_hdr_size);
            }
            Message::Connect { if_name } | Message::Connected { if_name } => {
                put_str(&mut b, 2, NAME_LEN, if_name)
            }
            Message::Disconnect(d) => {
                put_u32(&mut b, 2, d.code);
                put_str(&mut b, 6, REASON_LEN, &d.reason);
            }
        }
        b
    }

    /// Decodes and syntax-checks one received message.
    pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
        if buf.len() != MSG_SIZE {
            return Err(WireError::BadSize(buf.len()));
        }
        let ty = MsgType::try_from(get_u16(buf, 0))?;
        Ok(match ty {
            MsgType::None => return Err(WireError::UnknownType(0)),
            MsgType::Ack => Message::Ack,
            MsgType::Hello => Message::Hello(Hello {
                name: get_str(buf, 2, NAME_LEN, "hello.name")?,
                min_version: get_u16(buf, 34),
                max_version: get_u16(buf, 36),
                max_region: get_u16(buf, 38),
                max_m2s_ring: get_u16(buf, 40),
                max_s2m_ring: get_u16(buf, 42),
                max_log2_ring_size: buf[44],
            }),
            MsgType::Init => Message::Init(Init {
                version: get_u16(buf, 2),
                id: get_u32(buf, 4),
                mode: Mode::try_from(buf[8])?,
                secret: get_str(buf, 9, SECRET_LEN, "init.secret")?,
                name: get_str(buf, 33, NAME_LEN, "init.name")?,
            }),
            MsgType::AddRegion => Message::AddRegion(AddRegion {
                index: get_u16(buf, 2),
                size: u64::from_le_bytes(buf[4..12].try_into().expect("8 bytes")),
            }),
            MsgType::AddRing => {
                let r = AddRing {
                    flags: get_u16(buf, 2),
                    index: get_u16(buf, 4),
                    region: get_u16(buf, 6),
                    offset: get_u32(buf, 8),
                    log2_ring_size: buf[12],
                    private_hdr_size: get_u16(buf, 13),
                };
                if r.private_hdr_size != 0 {
                    return Err(WireError::PrivateHeader(r.private_hdr_size));
                }
                Message::AddRing(r)
            }
            MsgType::Connect => Message::Connect {
                if_name: get_str(buf, 2, NAME_LEN, "connect.if_name")?,
            },
            MsgType::Connected => Message::Connected {
                if_name: get_str(buf, 2, NAME_LEN, "connected.if_name")?,
            },
            MsgType::Disconnect => Message::Disconnect(Disconnect {
                code: get_u32(buf, 2),
                reason: get_str(buf, 6, REASON_LEN, "disconnect.string")?,
            }),
        })
    }
}

/// A message that is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message is {0} bytes, memif messages are exactly 128")]
    BadSize(usize),
    #[error("unknown message type {0}")]
    UnknownType(u16),
    #[error("unknown interface mode {0}")]
    BadMode(u8),
    #[error("field {0} is not NUL-terminated")]
    Unterminated(&'static str),
    #[error("private_hdr_size {0} is not supported (must be 0)")]
    PrivateHeader(u16),
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_str(b: &mut [u8], at: usize, width: usize, s: &str) {
    let bytes = s.as_bytes();
    let n = bytes.len().min(width - 1);
    b[at..at + n].copy_from_slice(&bytes[..n]);
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_str(b: &[u8], at: usize, width: usize, field: &'static str) -> Result<String, WireError> {
    let f = &b[at..at + width];
    let end = f
        .iter()
        .position(|&c| c == 0)
        .ok_or(WireError::Unterminated(field))?;
    Ok(String::from_utf8_lossy(&f[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Message) {
        let b = m.encode();
        assert_eq!(Message::decode(&b).unwrap(), m);
    }

    #[test]
    fn all_messages_roundtrip() {
        roundtrip(Message::Ack);
        roundtrip(Message::Hello(Hello {
            name: "memifd".into(),
            min_version: VERSION,
            max_version: VERSION,
            max_region: 255,
            max_m2s_ring: 255,
            max_s2m_ring: 255,
            max_log2_ring_size: 14,
        }));
        roundtrip(Message::Init(Init {
            version: VERSION,
            id: 0xdead_beef,
            mode: Mode::Ip,
            secret: "s3cret".into(),
            name: "client".into(),
        }));
        roundtrip(Message::AddRegion(AddRegion {
            index: 3,
            size: 1 << 40,
        }));
        roundtrip(Message::AddRing(AddRing {
            flags: RING_FLAG_S2M,
            index: 7,
            region: 1,
            offset: 0x1234_5678,
            log2_ring_size: 14,
            private_hdr_size: 0,
        }));
        roundtrip(Message::Connect {
            if_name: "memif0/0".into(),
        });
        roundtrip(Message::Connected {
            if_name: "memif-eth1".into(),
        });
        roundtrip(Message::Disconnect(Disconnect {
            code: 5,
            reason: "bad descriptor".into(),
        }));
    }

    #[test]
    fn field_offsets_match_the_protocol() {
        let b = Message::Init(Init {
            version: 0x0200,
            id: 0x0403_0201,
            mode: Mode::Ip,
            secret: "ab".into(),
            name: "cd".into(),
        })
        .encode();
        assert_eq!(&b[0..2], &[3, 0]);
        assert_eq!(&b[2..4], &[0x00, 0x02]);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(b[8], 1);
        assert_eq!(&b[9..12], b"ab\0");
        assert_eq!(&b[33..36], b"cd\0");

        let b = Message::AddRing(AddRing {
            flags: 1,
            index: 2,
            region: 3,
            offset: 4,
            log2_ring_size: 10,
            private_hdr_size: 0,
        })
        .encode();
        assert_eq!(&b[0..14], &[5, 0, 1, 0, 2, 0, 3, 0, 4, 0, 0, 0, 10, 0]);

        let b = Message::Hello(Hello {
            name: "x".into(),
            min_version: 0x200,
            max_version: 0x200,
            max_region: 1,
            max_m2s_ring: 2,
            max_s2m_ring: 3,
            max_log2_ring_size: 14,
        })
        .encode();
        assert_eq!(&b[34..45], &[0, 2, 0, 2, 1, 0, 2, 0, 3, 0, 14]);
    }

    #[test]
    fn wrong_sizes_are_rejected() {
        for n in [0, 1, 64, 127, 129, 256] {
            assert_eq!(Message::decode(&vec![0u8; n]), Err(WireError::BadSize(n)));
        }
    }

    #[test]
    fn unknown_and_none_types_are_rejected() {
        let mut b = [0u8; MSG_SIZE];
        assert_eq!(Message::decode(&b), Err(WireError::UnknownType(0)));
        b[0] = 9;
        assert_eq!(Message::decode(&b), Err(WireError::UnknownType(9)));
        b[0] = 0xff;
        b[1] = 0xff;
        assert_eq!(Message::decode(&b), Err(WireError::UnknownType(0xffff)));
    }

    #[test]
    fn unterminated_strings_are_rejected() {
        let mut b = Message::Hello(Hello {
            name: String::new(),
            min_version: 0,
            max_version: 0,
            max_region: 0,
            max_m2s_ring: 0,
            max_s2m_ring: 0,
            max_log2_ring_size: 0,
        })
        .encode();
        b[2..34].fill(b'a');
        assert_eq!(
            Message::decode(&b),
            Err(WireError::Unterminated("hello.name"))
        );

        let mut b = Message::Init(Init {
            version: VERSION,
            id: 0,
            mode: Mode::Ethernet,
            secret: String::new(),
            name: String::new(),
        })
        .encode();
        b[9..33].fill(b's');
        assert_eq!(
            Message::decode(&b),
            Err(WireError::Unterminated("init.secret"))
        );

        let mut b = Message::Disconnect(Disconnect {
            code: 0,
            reason: String::new(),
        })
        .encode();
        b[6..102].fill(b'r');
        assert_eq!(
            Message::decode(&b),
            Err(WireError::Unterminated("disconnect.string"))
        );
    }

    #[test]
    fn overlong_strings_are_truncated_on_encode() {
        let m = Message::Connect {
            if_name: "x".repeat(40),
        };
        match Message::decode(&m.encode()).unwrap() {
            Message::Connect { if_name } => assert_eq!(if_name.len(), 31),
            other => panic!("{other:?}"),
        }
        let m = Message::Disconnect(Disconnect {
            code: 1,
            reason: "y".repeat(200),
        });
        match Message::decode(&m.encode()).unwrap() {
            Message::Disconnect(d) => assert_eq!(d.reason.len(), 95),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_mode_and_private_header_are_rejected() {
        let mut b = Message::Init(Init {
            version: VERSION,
            id: 0,
            mode: Mode::Ethernet,
            secret: String::new(),
            name: String::new(),
        })
        .encode();
        b[8] = 3;
        assert_eq!(Message::decode(&b), Err(WireError::BadMode(3)));

        let mut b = Message::AddRing(AddRing {
            flags: 0,
            index: 0,
            region: 0,
            offset: 0,
            log2_ring_size: 10,
            private_hdr_size: 0,
        })
        .encode();
        b[13] = 8;
        assert_eq!(Message::decode(&b), Err(WireError::PrivateHeader(8)));
    }

    #[test]
    fn fd_carrying_messages() {
        assert!(Message::AddRegion(AddRegion { index: 0, size: 1 }).needs_fd());
        assert!(!Message::Ack.needs_fd());
        assert!(AddRing {
            flags: 1,
            index: 0,
            region: 0,
            offset: 0,
            log2_ring_size: 10,
            private_hdr_size: 0
        }
        .is_s2m());
    }
}
