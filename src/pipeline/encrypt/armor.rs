//! ASCII armor (RFC 9580 §6) for the encrypted part, written with CRLF line ends.
//!
//! Output is what sequoia's `armor::Writer` (kind Message, no headers, RFC 4880 profile)
//! writes, byte for byte, except that lines end in CRLF as mail needs. Ours exists for
//! speed: sequoia's writer computes the CRC-24 one octet at a time and hands every line to
//! its sink with a separate `write!`, which made it the largest single cost of encrypting
//! (and a CRLF rewrite pass came on top); here the checksum is table-sliced eight octets at
//! a time and lines are encoded straight into one output buffer.
//!
//! The CRC-24 line is kept although RFC 9580 says it SHOULD NOT be written: rnp (and so
//! Thunderbird) warns about every message without one.

use std::io::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Octets of input per armor line: 64 base64 characters (RFC 9580 §6.3).
const LINE_OCTETS: usize = 48;
/// Characters per full armor line, without the line end.
const LINE_CHARS: usize = 64;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----\r\n\r\n";
const END: &[u8] = b"-----END PGP MESSAGE-----\r\n";

/// An armor encoder: binary OpenPGP in through [`Write`], armored CRLF text collected in
/// [`ArmorEncoder::output`] for the caller to drain.
///
/// Call [`ArmorEncoder::finish`] to add the last line, the checksum and the footer.
pub(crate) struct ArmorEncoder {
    /// Input octets that do not fill a line yet.
    stash: [u8; LINE_OCTETS],
    stash_len: usize,
    crc: Crc24,
    started: bool,
    finished: bool,
    output: Vec<u8>,
}

impl Default for ArmorEncoder {
    fn default() -> Self {
        ArmorEncoder {
            stash: [0; LINE_OCTETS],
            stash_len: 0,
            crc: Crc24::new(),
            started: false,
            finished: false,
            output: Vec::new(),
        }
    }
}

impl ArmorEncoder {
    /// The armored text produced so far and not yet taken.
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Encodes what is stashed and writes the checksum and the footer. Like sequoia's
    /// writer, writes nothing at all if no data was ever written.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Err(io::Error::other("armor already finished"));
        }
        self.finished = true;
        if !self.started {
            return Ok(());
        }
        if self.stash_len > 0 {
            let (stash, len) = (self.stash, self.stash_len);
            push_line(&mut self.output, &stash[..len]);
        }
        let crc = self.crc.finish().to_be_bytes();
        let mut encoded = [0u8; 4];
        // Cannot fail: three octets are four characters.
        let _ = STANDARD.encode_slice(&crc[1..], &mut encoded);
        self.output.push(b'=');
        self.output.extend_from_slice(&encoded);
        self.output.extend_from_slice(b"\r\n");
        self.output.extend_from_slice(END);
        Ok(())
    }
}

impl Write for ArmorEncoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other("armor already finished"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.started {
            self.started = true;
            self.output.extend_from_slice(BEGIN);
        }
        self.crc.update(buf);
        let mut input = buf;
        if self.stash_len > 0 {
            let take = (LINE_OCTETS - self.stash_len).min(input.len());
            self.stash[self.stash_len..self.stash_len + take].copy_from_slice(&input[..take]);
            self.stash_len += take;
            input = &input[take..];
            if self.stash_len < LINE_OCTETS {
                return Ok(buf.len());
            }
            let stash = self.stash;
            push_line(&mut self.output, &stash);
            self.stash_len = 0;
        }
        let whole = input.len() / LINE_OCTETS * LINE_OCTETS;
        self.output.reserve(whole / LINE_OCTETS * (LINE_CHARS + 2));
        for line in input[..whole].chunks_exact(LINE_OCTETS) {
            push_line(&mut self.output, line);
        }
        let rest = &input[whole..];
        self.stash[..rest.len()].copy_from_slice(rest);
        self.stash_len = rest.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends `octets` (at most one line's worth) base64-encoded, with `=` padding, and CRLF.
fn push_line(lines: &mut Vec<u8>, octets: &[u8]) {
    let start = lines.len();
    lines.resize(start + LINE_CHARS + 2, 0);
    // Cannot fail: 48 octets never need more than 64 characters.
    let encoded = STANDARD
        .encode_slice(octets, &mut lines[start..start + LINE_CHARS])
        .unwrap_or(0);
    lines.truncate(start + encoded);
    lines.extend_from_slice(b"\r\n");
}

/// The armor checksum, CRC-24 (RFC 9580 §6.1.1), eight octets per step.
///
/// The 24-bit register lives in the top 24 bits of a `u32`, which makes it the textbook
/// MSB-first CRC-32 table algorithm with the polynomial shifted up by 8.
#[derive(Debug, Clone, Copy)]
struct Crc24(u32);

const CRC24_INIT: u32 = 0xB7_04CE;
const CRC24_POLY: u32 = 0x86_4CFB;

/// `TABLES[k][b]`: the register contribution of octet `b` followed by `k` zero octets.
static TABLES: [[u32; 256]; 8] = crc24_tables();

const fn crc24_tables() -> [[u32; 256]; 8] {
    let poly = CRC24_POLY << 8;
    let mut tables = [[0u32; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let mut crc = (b as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ poly
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let previous = tables[k - 1][b];
            tables[k][b] = (previous << 8) ^ tables[0][(previous >> 24) as usize];
            b += 1;
        }
        k += 1;
    }
    tables
}

impl Crc24 {
    fn new() -> Self {
        Crc24(CRC24_INIT << 8)
    }

    fn update(&mut self, data: &[u8]) {
        let t = &TABLES;
        let mut crc = self.0;
        let mut blocks = data.chunks_exact(8);
        for block in &mut blocks {
            let a = crc ^ u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
            let b = u32::from_be_bytes([block[4], block[5], block[6], block[7]]);
            crc = t[7][(a >> 24) as usize]
                ^ t[6][(a >> 16) as usize & 0xff]
                ^ t[5][(a >> 8) as usize & 0xff]
                ^ t[4][a as usize & 0xff]
                ^ t[3][(b >> 24) as usize]
                ^ t[2][(b >> 16) as usize & 0xff]
                ^ t[1][(b >> 8) as usize & 0xff]
                ^ t[0][b as usize & 0xff];
        }
        for &octet in blocks.remainder() {
            crc = (crc << 8) ^ t[0][((crc >> 24) ^ u32::from(octet)) as usize];
        }
        self.0 = crc;
    }

    fn finish(self) -> u32 {
        self.0 >> 8
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sequoia_openpgp::armor;

    use super::*;

    /// CRC-24 one bit at a time, straight from RFC 9580 §6.1.1.
    fn crc24_reference(data: &[u8]) -> u32 {
        let mut crc = CRC24_INIT;
        for &octet in data {
            crc ^= u32::from(octet) << 16;
            for _ in 0..8 {
                crc <<= 1;
                if crc & 0x100_0000 != 0 {
                    crc ^= CRC24_POLY;
                }
            }
        }
        crc & 0xFF_FFFF
    }

    /// Deterministic test octets (xorshift), every value represented.
    fn octets(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// What sequoia's own armor writer makes of `data`, with CRLF line ends.
    fn sequoia_armor(data: &[u8]) -> Vec<u8> {
        let mut writer = armor::Writer::new(Vec::new(), armor::Kind::Message).unwrap();
        writer.write_all(data).unwrap();
        let lf = writer.finalize().unwrap();
        let mut crlf = Vec::with_capacity(lf.len() * 2);
        for &c in &lf {
            if c == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(c);
        }
        crlf
    }

    fn ours(data: &[u8], piece: usize) -> Vec<u8> {
        let mut encoder = ArmorEncoder::default();
        let mut taken = Vec::new();
        for chunk in data.chunks(piece.max(1)) {
            encoder.write_all(chunk).unwrap();
            // Drained as the encryption stage does, after every write.
            taken.append(encoder.output());
        }
        encoder.finish().unwrap();
        taken.append(encoder.output());
        taken
    }

    #[test]
    fn crc24_matches_the_rfc_algorithm_at_every_length_and_split() {
        let data = octets(1000, 7);
        for len in (0..40).chain([63, 64, 65, 511, 1000]) {
            let whole = &data[..len];
            let mut crc = Crc24::new();
            crc.update(whole);
            assert_eq!(crc.finish(), crc24_reference(whole), "length {len}");
            for split in 0..len.min(17) {
                let mut crc = Crc24::new();
                crc.update(&whole[..split]);
                crc.update(&whole[split..]);
                assert_eq!(
                    crc.finish(),
                    crc24_reference(whole),
                    "length {len} split {split}"
                );
            }
        }
        // sequoia's own test vector.
        let mut crc = Crc24::new();
        crc.update(b"foobarbaz");
        assert_eq!(crc.finish(), crc24_reference(b"foobarbaz"));
    }

    #[test]
    fn output_is_sequoias_armor_with_crlf_for_any_length_and_write_size() {
        for len in [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 1000, 4096, 70_000] {
            let data = octets(len, len as u64 + 1);
            let expected = sequoia_armor(&data);
            for piece in [1, 2, 3, 5, 47, 48, 49, 100, 4096, 1 << 20] {
                assert_eq!(
                    String::from_utf8(ours(&data, piece)).unwrap(),
                    String::from_utf8(expected.clone()).unwrap(),
                    "length {len}, writes of {piece}"
                );
            }
        }
    }

    #[test]
    fn sequoia_reads_it_back_and_the_checksum_is_right() {
        use std::io::Read;
        let data = octets(10_000, 3);
        let armored = ours(&data, 777);
        let mut reader = armor::Reader::from_bytes(
            &armored,
            armor::ReaderMode::Tolerant(Some(armor::Kind::Message)),
        );
        let mut back = Vec::new();
        reader.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);

        // Readers may not reject a wrong checksum (RFC 9580), so check it here.
        let eq = armored.windows(3).position(|w| w == b"\r\n=").unwrap() + 3;
        let crc = STANDARD.decode(&armored[eq..eq + 4]).unwrap();
        assert_eq!(
            u32::from_be_bytes([0, crc[0], crc[1], crc[2]]),
            crc24_reference(&data)
        );
    }

    #[test]
    fn every_line_ends_in_crlf_and_none_is_longer_than_64() {
        let armored = ours(&octets(5000, 9), 333);
        assert!(armored.ends_with(b"-----END PGP MESSAGE-----\r\n"));
        for line in armored.split(|&c| c == b'\n') {
            if line.is_empty() {
                continue; // after the final line end
            }
            assert!(line.ends_with(b"\r"), "{:?}", String::from_utf8_lossy(line));
            assert!(line.len() <= LINE_CHARS + 1 || line.starts_with(b"-----"));
        }
        assert!(!armored.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    }
}
